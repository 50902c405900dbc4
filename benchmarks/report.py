"""The benchmark's report: rows of figures (one figure, one shape, several models), the goal verdicts, the markdown
table and the sequence-length plot."""

from pathlib import Path

# goal key -> (what, comparison, target); the value is filled by the unit that measures it
GOALS = {
    "train_small": ("training tokens/s at small, gptforge / Llama (eager)", ">=", 1.15),
    "train_gpt2s": ("training tokens/s at gpt2s, gptforge / Llama (eager)", ">=", 1.15),
    "train_small_compiled": ("training tokens/s at small, gptforge compiled blocks / Llama eager", ">=", 1.15),
    "train_gpt2s_compiled": ("training tokens/s at gpt2s, gptforge compiled blocks / Llama eager", ">=", 1.15),
    "mfu_gpt2s": ("training share of the measured fp32 matmul peak at gpt2s, gptforge eager", ">=", 0.85),
    "mfu_gpt2s_compiled": ("training share of the measured fp32 matmul peak at gpt2s, gptforge compiled", ">=", 0.85),
    "decode_static_b1": ("decode tokens/s, batch 1, static cache, gptforge compiled / Llama", ">=", 3.0),
    "decode_dynamic_b1": ("decode tokens/s, batch 1, dynamic cache, gptforge / Llama", ">=", 1.2),
    "memory_50257": ("training-step peak at vocab 50257 (above weights + AdamW state), gptforge / Llama", "<=", 0.6),
    "memory_50257_grads_kept": ("the same with gradients kept allocated (activations + transients)", "<=", 0.6),
    "memory_8192": ("training-step peak at vocab 8192 (above weights + AdamW state), gptforge / Llama", "<=", 0.6),
    # the 50257-vocab goal at batch 8, where logits (not gradients) make the plain path's peak
    "memory_gpt2s-b8": ("the vocab-50257 step peak at batch 8 (logits-dominated), gptforge / Llama", "<=", 0.6),
}


def fmt(value: dict) -> str:
    median, low, high = value["median"], value["min"], value["max"]
    if median >= 100:
        return f"{median:,.0f} ({low:,.0f}-{high:,.0f})"
    if median >= 1:
        return f"{median:.2f} ({low:.2f}-{high:.2f})"
    return f"{median:.3f} ({low:.3f}-{high:.3f})"


def single(value: float) -> dict:
    """A figure measured once (memory is deterministic)."""
    return {"median": value, "min": value, "max": value, "n": 1}


class Report:
    """Collects rows, goal values and notes; units running in child processes send theirs as JSON (`to_dict`)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.goals: dict[str, float] = {}
        self.notes: list[str] = []
        self.curves: dict[str, dict[str, dict]] = {}  # sweep: model -> {seq: rate}

    def add(self, figure: str, shape: str, values: dict, pairs: list[tuple[str, str]], unit: str = "") -> None:
        """`pairs` lists (gptforge label, reference label); each present pair gets a ratio of medians."""
        ratios = {
            f"{forge}/{reference}": values[forge]["median"] / values[reference]["median"]
            for forge, reference in pairs
            if forge in values and reference in values and values[reference]["median"]
        }
        self.rows.append({"figure": figure, "shape": shape, "unit": unit, "values": values, "ratios": ratios})

    def merge(self, other: dict) -> None:
        self.rows += other["rows"]
        self.goals.update(other["goals"])
        self.notes += other["notes"]
        for name, points in other["curves"].items():
            self.curves.setdefault(name, {}).update(points)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "goals": self.goals, "notes": self.notes, "curves": self.curves}

    def table(self) -> str:
        lines = [
            "| figure | shape | reference | gptforge | ratio | reference | gptforge | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            cells = [row["figure"] + (f" ({row['unit']})" if row["unit"] else ""), row["shape"]]
            for key, value in row["ratios"].items():
                forge, reference = key.split("/")
                cells += [f"{reference}: {fmt(row['values'][reference])}", f"{forge}: {fmt(row['values'][forge])}"]
                cells.append(f"**{value:.2f}x**")
            if not row["ratios"]:
                cells += [f"{name}: {fmt(v)}" for name, v in row["values"].items()]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def goal_lines(self) -> str:
        lines = []
        for key, (text, op, target) in GOALS.items():
            value = self.goals.get(key)
            if value is None:
                lines.append(f"- {text} {op} {target}: not measured in this run")
                continue
            met = value >= target if op == ">=" else value <= target
            lines.append(f"- {text} {op} {target}: {value:.2f} -> {'MET' if met else 'NOT MET'}")
        return "\n".join(lines)


def plot_sweep(curves: dict[str, dict[str, dict]], path: Path, title: str) -> None:
    """Training tokens/s against sequence length (left) and gptforge / reference ratios (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "Llama": ("tab:blue", "--"),
        "gptforge": ("tab:blue", "-"),
        "GPT-2": ("tab:orange", "--"),
        "gptforge-gpt2": ("tab:orange", "-"),
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in curves.items():
        seqs = sorted(points, key=int)
        medians = [points[s]["median"] for s in seqs]
        errors = [
            [points[s]["median"] - points[s]["min"] for s in seqs],
            [points[s]["max"] - points[s]["median"] for s in seqs],
        ]
        color, line = styles.get(name, ("gray", "-"))
        xs = [int(s) for s in seqs]
        left.errorbar(xs, medians, yerr=errors, label=name, color=color, linestyle=line, marker="o", capsize=3)
    left.set_xscale("log", base=2)
    left.set_xlabel("sequence length (2048 tokens per step)")
    left.set_ylabel("training tokens/s (median, min-max)")
    left.set_title(title)
    left.legend()
    for forge, reference in (("gptforge", "Llama"), ("gptforge-gpt2", "GPT-2")):
        if forge in curves and reference in curves:
            seqs = sorted(curves[forge], key=int)
            ratios = [curves[forge][s]["median"] / curves[reference][s]["median"] for s in seqs]
            right.plot(
                [int(s) for s in seqs], ratios, marker="o", color=styles[reference][0], label=f"{forge} / {reference}"
            )
    right.axhline(1.0, color="gray", linewidth=0.8)
    right.set_xscale("log", base=2)
    right.set_xlabel("sequence length")
    right.set_ylabel("training throughput ratio")
    right.set_title("gptforge / Transformers, same shapes")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
