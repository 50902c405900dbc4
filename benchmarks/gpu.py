"""gptforge against Transformers' own GPT-2 and Llama on one CUDA GPU, bf16, at GPT-2 124M's shape: the paths users
run (`Trainer`, `gptforge pretrain`) and a hand-written loop as the ceiling.

The GPU half of the benchmark (`benchmarks.run` is the CPU half). Same method: the pairs share their weights
(`benchmarks.models.model_pair`), the models alternate round-robin inside one process, figures are medians with the
spread of the measured rounds, and every ratio is gptforge / reference from the same run.

Usage (on a machine with a CUDA GPU; about 8 minutes, most of it compilation):
    python -m benchmarks.gpu
    python -m benchmarks.gpu --sections train,trainer,pretrain --batch 16 --out runs/gpu
    python -m benchmarks.gpu --smoke          # on the CPU, a tiny shape, fp32: checks that every unit runs

Measured:
- peak: a bf16 8192^3 `torch.mm` on random data (median of 10, CUDA events): the card's measured matmul ceiling;
- training at vocab 50257, d 768, 12 layers, 12 heads, seq 1024 (GPT-2 124M): tokens/s of forward + backward +
  fused AdamW step with the forward under `torch.autocast(bfloat16)` and fp32 master weights (what Trainer's
  `bf16=True` does), eager and `torch.compile(model)`; achieved TFLOP/s with 6 x matmul params + 12 x layers x seq x
  hidden per token (nanoGPT's and PaLM's formula), and MFU against both the measured ceiling and the datasheet's
  dense bf16 peak; the step's peak GPU memory;
- `Trainer` (the headline): `Trainer(TrainingArguments(bf16=True, optim="adamw_torch_fused", max_grad_norm=1.0,
  torch_compile=...))` on gptforge and on HF Llama with the same weights and arguments, compiled and eager
  (`benchmarks.trainer_path.trainer_rate`: steady tokens/s, synchronised at each step's end);
- `gptforge pretrain --compile` and without: the command as a user runs it, on a text folder with a tokenizer of the
  shape's vocabulary (`benchmarks.trainer_path.pretrain_rate`: timed from its metrics.jsonl lines);
- decoding: tokens/s of greedy `generate` at batch 1 (prompt 32, 128 new tokens), bf16 weights, with the dynamic
  cache (eager) and with `cache_implementation="static"`, which `generate` compiles itself on CUDA (CUDA graphs);
  the compile time is reported, not counted.

Outputs: a table on stdout, then one JSON line; `--out`/gpu.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import transformers

import gptforge

from .measure import make_optimizer, time_decoding, time_training, train_step
from .models import FAMILIES, Shape, model_pair, train_flops_per_token
from .trainer_path import SHAPES_HERE, pretrain_rate, trainer_rate

# dense bf16 tensor-core peak from NVIDIA's datasheets (SXM parts), TFLOP/s: the denominator llm.c's MFU uses
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


SMOKE = False  # --smoke: the CPU, a tiny shape, fp32


def gpt2_124m(batch: int, seq: int) -> Shape:
    if SMOKE:
        return SHAPES_HERE["tiny"]
    return Shape("gpt2-124m", vocab=50257, hidden=768, layers=12, heads=12, seq=seq, batch=batch,
                 llama_intermediate=2048, gpt2_intermediate=3072)  # fmt: skip


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if device.type == "cuda" else None


def measured_peak_tflops(device: torch.device, size: int = 8192, repeats: int = 10) -> float | None:
    """Median TFLOP/s of a bf16 (size, size) x (size, size) product on random data, timed with CUDA events."""
    if device.type != "cuda":
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.mm(a, b)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * size**3 / statistics.median(times) / 1e12


def datasheet_peak(name: str) -> float | None:
    return next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)


def unit_train(
    result: dict, device: torch.device, batch: int, seq: int, rounds: int, compiled: bool, families: tuple[str, ...]
) -> None:
    shape = gpt2_124m(batch, seq)
    ids = torch.randint(0, shape.vocab, (batch, seq), generator=torch.Generator().manual_seed(1)).to(device)
    for family in families:
        models = {k: m.to(device) for k, m in model_pair(family, shape, max_positions=seq).items()}
        if compiled:
            models = {f"{k}+compile": torch.compile(m) for k, m in models.items()}
        samples, _, first_loss, first_step = time_training(
            models, ids, rounds, warmup=3, probe=False, autocast=autocast_dtype(device)
        )
        for name, model in models.items():
            rate = samples[name].rate(shape.tokens)
            flops = train_flops_per_token(getattr(model, "_orig_mod", model), shape)
            row = {
                "tokens_per_s": rate,
                "step_ms": 1e3 * shape.tokens / rate["median"],
                "tflops": rate["median"] * flops / 1e12,
                "first_loss": first_loss[name],
                "first_step_s": first_step[name],
            }
            result["train"][name] = row
        # peak memory of one step per model, alone (the round-robin above holds every model's state at once)
        for name, model in models.items() if device.type == "cuda" else ():
            others = [m for k, m in models.items() if k != name]
            result["train"][name]["peak_gib"] = step_peak_gib(model, ids, device, others)
        del models
        torch.cuda.empty_cache()


def unit_trainer(result: dict, device: torch.device, batch: int, seq: int, rounds: int, compiled: bool) -> None:
    """The `Trainer` rows: gptforge and HF Llama (same weights), the same arguments."""
    shape = gpt2_124m(batch, seq)
    generator = torch.Generator().manual_seed(1)
    warmup = 3 if SMOKE else 10
    batches = [torch.randint(0, shape.vocab, (shape.batch, shape.seq), generator=generator)]
    batches *= warmup + rounds
    for name, model in model_pair("llama", shape, max_positions=max(seq, shape.seq)).items():
        label = f"Trainer {name}{'+compile' if compiled else ''}"
        rate = trainer_rate(model, batches, warmup, device, compiled)
        result["trainer"][label] = row_of(rate, model, shape)
        del model
        torch._dynamo.reset()
        torch.cuda.empty_cache()


def unit_pretrain(result: dict, device: torch.device, batch: int, seq: int, rounds: int, out_dir: Path) -> None:
    """`gptforge pretrain` with and without `--compile` (Llama architecture at the shape)."""
    shape = gpt2_124m(batch, seq)
    warmup = 3 if SMOKE else 10
    for compiled in (True, False):
        label = f"gptforge pretrain{' --compile' if compiled else ''}"
        tag = "compiled" if compiled else "eager"
        rate = pretrain_rate(out_dir / "pretrain", shape, warmup + rounds, warmup, device, compiled, tag)
        llama = model_pair("llama", shape, max_positions=max(seq, shape.seq))["gptforge"]
        result["trainer"][label] = row_of(rate, llama, shape)


def row_of(rate: float, model, shape: Shape) -> dict:
    """A single steady rate as a row of the training table (min = max = median)."""
    flops = train_flops_per_token(getattr(model, "_orig_mod", model), shape)
    return {
        "tokens_per_s": {"median": rate, "min": rate, "max": rate},
        "step_ms": 1e3 * shape.tokens / rate,
        "tflops": rate * flops / 1e12,
    }


def step_peak_gib(model, ids: torch.Tensor, device: torch.device, others: list) -> float:
    """Peak GPU memory of one training step (weights, AdamW state, activations), the other models moved off."""
    for other in others:
        other.to("cpu")
    torch.cuda.empty_cache()
    optimizer = make_optimizer(model)
    torch.cuda.reset_peak_memory_stats(device)
    train_step(model, optimizer, ids, autocast=torch.bfloat16)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    optimizer.state.clear()
    model.zero_grad(set_to_none=True)
    for other in others:
        other.to(device)
    return peak


def unit_decode(result: dict, device: torch.device, new_tokens: int, rounds: int, families: tuple[str, ...]) -> None:
    shape = gpt2_124m(batch=1, seq=1024)
    prompt = torch.randint(1, shape.vocab, (1, 32), generator=torch.Generator().manual_seed(2)).to(device)
    for family in families:
        models = {
            k: m.to(device=device, dtype=torch.bfloat16)
            for k, m in model_pair(family, shape, max_positions=1024, training=False).items()
        }
        for cache in ("dynamic", "static"):
            contenders = {k: (m, None) for k, m in models.items()}
            samples, first, tokens = time_decoding(contenders, prompt, new_tokens, cache, rounds)
            reference = next(iter(tokens.values()))
            for name, s in samples.items():
                rate = s.rate(new_tokens)
                result["decode"][f"{name} {cache}"] = {
                    "tokens_per_s": rate,
                    "first_call_s": first[name],
                    "same_tokens_as_reference": bool(torch.equal(tokens[name], reference)),
                }
        del models
        torch.cuda.empty_cache()


def ratio(rows: dict, a: str, b: str) -> float | None:
    if a in rows and b in rows:
        return rows[a]["tokens_per_s"]["median"] / rows[b]["tokens_per_s"]["median"]
    return None


def table(result: dict) -> str:
    lines = []
    peak, sheet = result["peak_tflops_measured"], result["peak_tflops_datasheet"]
    if peak is not None:
        lines.append(f"bf16 mm peak: measured {peak:.0f} TFLOP/s (8192^3, random data), datasheet {sheet} TFLOP/s")
    for title, rows in (("the paths users run", result["trainer"]), ("hand-written loop (ceiling)", result["train"])):
        if not rows:
            continue
        lines.append(f"\n| training, {title} | tokens/s (min-max) | ms/step | TFLOP/s | MFU measured | MFU "
                     "datasheet | peak GiB |")  # fmt: skip
        lines.append("|---|---|---|---|---|---|---|")
        for name, row in rows.items():
            r = row["tokens_per_s"]
            mfu = f"{row['tflops'] / peak:.1%}" if peak else "-"
            mfu_sheet = f"{row['tflops'] / sheet:.1%}" if sheet else "-"
            lines.append(
                f"| {name} | {r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f}) | {row['step_ms']:.1f} | "
                f"{row['tflops']:.0f} | {mfu} | {mfu_sheet} | {row.get('peak_gib', 0):.1f} |"
            )
    decode = result["decode"]
    if decode:
        lines.append("\n| decoding, batch 1, bf16 | tokens/s (min-max) | first call s | same tokens |")
        lines.append("|---|---|---|---|")
        for name, row in decode.items():
            r = row["tokens_per_s"]
            lines.append(
                f"| {name} | {r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f}) | {row['first_call_s']:.1f} | "
                f"{row['same_tokens_as_reference']} |"
            )
    lines.append("\nRatios gptforge / reference (same run):")
    for key, value in result["ratios"].items():
        lines.append(f"- {key}: {value:.2f}x" if value is not None else f"- {key}: not measured")
    return "\n".join(lines)


def main(
    sections: tuple[str, ...] = ("trainer", "pretrain", "train", "decode"),
    batch: int = 16,
    seq: int = 1024,
    rounds: int = 10,
    decode_rounds: int = 5,
    new_tokens: int = 128,
    compile_train: bool = True,
    train_families: tuple[str, ...] = tuple(FAMILIES),
    decode_families: tuple[str, ...] = ("llama",),
    deadline_s: float = 480.0,
    out: str = "runs/gpu",
) -> dict:
    """Run the GPU benchmark, print the table and one JSON line, write `out`/gpu.json. A unit that fails is reported
    with its traceback and the others still run; a unit that would start after `deadline_s` is skipped (GPU time
    may be rationed: a partial table beats none)."""
    import warnings

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    if not torch.cuda.is_available() and not SMOKE:
        raise SystemExit("benchmarks.gpu needs a CUDA GPU (torch.cuda.is_available() is False); --smoke runs on CPU")
    device = torch.device("cpu" if SMOKE else "cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    name = "cpu (smoke)" if SMOKE else torch.cuda.get_device_name(device)
    result = {
        "bench": "gptforge-gpu",
        "machine": {
            "gpu": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "smoke": SMOKE,
            "transformers": transformers.__version__,
            "gptforge": gptforge.__version__,
            "batch": batch,
            "seq": seq,
        },
        "peak_tflops_measured": measured_peak_tflops(device),
        "peak_tflops_datasheet": datasheet_peak(name),
        "trainer": {},
        "train": {},
        "decode": {},
        "errors": {},
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = []
    if "trainer" in sections:
        for compiled in (True, False) if compile_train else (False,):
            units.append(
                (f"trainer{' compiled' if compiled else ''}",
                 lambda compiled=compiled: unit_trainer(result, device, batch, seq, rounds, compiled))
            )  # fmt: skip
    if "pretrain" in sections:
        units.append(("pretrain", lambda: unit_pretrain(result, device, batch, seq, rounds, out_dir)))
    if "train" in sections:
        units.append(("train eager", lambda: unit_train(result, device, batch, seq, rounds, False, train_families)))
    if "decode" in sections:
        units.append(("decode", lambda: unit_decode(result, device, new_tokens, decode_rounds, decode_families)))
    if "train" in sections and compile_train:
        units.append(("train compiled", lambda: unit_train(result, device, batch, seq, rounds, True, train_families)))
    begun = time.perf_counter()
    for unit, run in units:
        started = time.perf_counter()
        if started - begun > deadline_s:
            result["errors"][unit] = f"skipped: {started - begun:.0f}s in, past the {deadline_s:.0f}s deadline"
            continue
        try:
            run()
        except Exception:  # one broken unit must not cost the others' figures on a rationed machine
            result["errors"][unit] = traceback.format_exc()
            print(result["errors"][unit], file=sys.stderr)
        print(f"[gpu] {unit}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
        (out_dir / "gpu.json").write_text(json.dumps(result))  # partial results survive a timeout
    train, decode, trainer = result["train"], result["decode"], result["trainer"]
    result["ratios"] = {
        "Trainer compiled vs Llama Trainer compiled": ratio(
            trainer, "Trainer gptforge+compile", "Trainer Llama+compile"
        ),
        "Trainer eager vs Llama Trainer eager": ratio(trainer, "Trainer gptforge", "Trainer Llama"),
        "pretrain --compile vs loop compiled": ratio(trainer, "gptforge pretrain --compile", "gptforge+compile"),
        "Trainer compiled vs loop compiled": ratio(trainer, "Trainer gptforge+compile", "gptforge+compile"),
        "train eager vs Llama": ratio(train, "gptforge", "Llama"),
        "train eager vs GPT-2": ratio(train, "gptforge-gpt2", "GPT-2"),
        "train compiled vs Llama compiled": ratio(train, "gptforge+compile", "Llama+compile"),
        "train compiled vs GPT-2 compiled": ratio(train, "gptforge-gpt2+compile", "GPT-2+compile"),
        "decode static+compile vs Llama dynamic": ratio(decode, "gptforge static", "Llama dynamic"),
        "decode static+compile vs Llama static+compile": ratio(decode, "gptforge static", "Llama static"),
        "decode dynamic vs Llama dynamic": ratio(decode, "gptforge dynamic", "Llama dynamic"),
        "decode static+compile vs own dynamic (gpt-fast's ~4x)": ratio(decode, "gptforge static", "gptforge dynamic"),
    }
    print(f"\n## gptforge GPU benchmark, bf16, {name}")
    print(", ".join(f"{k}: {v}" for k, v in result["machine"].items()))
    print(table(result))
    line = json.dumps(result, separators=(",", ":"), default=str)
    (out_dir / "gpu.json").write_text(line + "\n")
    print(line)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sections", default="trainer,pretrain,train,decode", help="comma list: trainer,pretrain,train,decode"
    )
    parser.add_argument("--batch", type=int, default=16, help="training sequences per step (default 16)")
    parser.add_argument("--seq", type=int, default=1024, help="training sequence length (default 1024)")
    parser.add_argument("--rounds", type=int, default=10, help="measured training steps per model (default 10)")
    parser.add_argument("--decode-rounds", type=int, default=5, help="measured generate calls per model (default 5)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per call (default 128)")
    parser.add_argument("--no-compile-train", action="store_true", help="skip the torch.compile(model) training rows")
    parser.add_argument("--train-families", default="llama,gpt2", help="comma list of pairs to train: llama,gpt2")
    parser.add_argument(
        "--decode-families", default="llama", help="comma list of pairs to decode: llama,gpt2 (each compiles twice)"
    )
    parser.add_argument("--deadline", type=float, default=480.0, help="skip units that would start after SECONDS")
    parser.add_argument("--out", default=os.environ.get("OUT", "runs/gpu"), help="folder for gpu.json")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, tiny shape, fp32, 3 rounds, no compiled rows: checks every unit runs",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    SMOKE = args.smoke
    if SMOKE:
        args.rounds, args.decode_rounds, args.new_tokens, args.batch = 3, 1, 8, SHAPES_HERE["tiny"].batch
        args.seq = SHAPES_HERE["tiny"].seq
        args.train_families, args.decode_families = "llama", "llama"
        # compiling on a CPU takes minutes per row: the smoke run checks the eager rows, whole
        args.no_compile_train, args.deadline = True, float("inf")
    main(
        sections=tuple(args.sections.split(",")),
        batch=args.batch,
        seq=args.seq,
        rounds=args.rounds,
        decode_rounds=args.decode_rounds,
        new_tokens=args.new_tokens,
        compile_train=not args.no_compile_train,
        train_families=tuple(args.train_families.split(",")),
        decode_families=tuple(args.decode_families.split(",")),
        deadline_s=args.deadline,
        out=args.out,
    )
