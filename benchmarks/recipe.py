"""The recipe ablation: each of the field's switches on its own over `classic`, and the whole recipes, at equal
steps and equal tokens, on the stdlib corpus and on any text you point `--data` at.

Every row is `gptforge pretrain` itself (`scripts/pretrain.main`, called in this process): the same preset, batch,
block size, steps, tokenizer (trained once per corpus, on its training split) and validation blocks, so rows differ
only by what the row names. Validation is in bits per byte (the run's `eval_bits_per_byte`: nats per token / ln 2 /
bytes per token), which does not depend on the tokenizer. Each row runs `--seeds` times (init and data order); a
cell is the mean ± half the range over the seeds, and the seed noise line is classic's own half-range: a difference
smaller than it says nothing. Step time is training time per optimizer step, relative to classic on the same corpus:
it means something only when the runs had the machine to themselves (one process at a time, nothing else running).

Rows: `classic`; `+muon`, `+wsd` (warmup-stable-decay, linear cooldown to 0 over the last 20%), `+relu2`,
`+qk_norm`, `+zero_init`, `+softcap15`, `+embedding_shortcut`, `+untied`: one of the field's switches each, the rest
classic; `modern-exportable` and `modern`: the recipes; `modern -zero_init`, `modern -qk_norm`,
`modern -embedding_shortcut`, `modern -adamw3x` (the AdamW half at Muon's learning rate and beta1), `modern +relu2`
and `modern +softcap15`: one part taken out of or added to `modern`, which asks whether it pays inside the whole
recipe. A row whose config field this GPTForgeConfig lacks is reported as skipped.

Usage:
    python -m benchmarks.recipe --data corpus/prose/ --steps 500 --batch 16 --block-size 256
    python -m benchmarks.recipe --preset llama-34m --seeds 3 --json results/recipe.json
    python -m benchmarks.recipe --rows classic,+muon,modern --skip-stdlib --data book.txt
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from gptforge.scripts import pretrain
from gptforge.training.config import config_fields
from gptforge.training.recipes import RECIPES

_MODERN = RECIPES["modern"]
_WSD = {key: _MODERN[key] for key in ("lr_schedule", "decay_fraction", "min_lr_ratio")}
# row name -> (recipe, pretrain keywords, config overrides)
ROWS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "classic": ("classic", {}, {}),
    "+muon": ("classic", {"optim": "muon"}, {}),
    "+wsd": ("classic", _WSD, {}),
    "+relu2": ("classic", {}, {"hidden_act": "relu2"}),
    "+qk_norm": ("classic", {}, {"qk_norm": True}),
    "+zero_init": ("classic", {}, {"zero_init": True}),
    "+softcap15": ("classic", {}, {"final_logit_softcapping": 15.0}),
    "+embedding_shortcut": ("classic", {}, {"embedding_shortcut": True}),
    "+untied": ("classic", {}, {"tie_word_embeddings": False}),
    "modern-exportable": ("modern-exportable", {}, {}),
    "modern": ("modern", {}, {}),
    # one switch of `modern` taken out or added: whether it pays inside the whole recipe, not only over classic
    "modern -zero_init": ("modern", {}, {"zero_init": False}),
    "modern -qk_norm": ("modern", {}, {"qk_norm": False}),
    "modern -embedding_shortcut": ("modern", {}, {"embedding_shortcut": False}),
    "modern -adamw3x": ("modern", {"adamw_lr_ratio": 1.0, "embedding_beta1": 0.9}, {}),
    "modern +relu2": ("modern", {}, {"hidden_act": "relu2"}),
    "modern +softcap15": ("modern", {}, {"final_logit_softcapping": 15.0}),
}


# pretrain options a run of the ablation may set for every row (None: each row's recipe decides)
SHARED = ("learning_rate", "warmup_steps")


def missing_fields(row: str) -> list[str]:
    """The config fields a row needs that this GPTForgeConfig does not have."""
    recipe, _, overrides = ROWS[row]
    return sorted((set(RECIPES[recipe]["model"]) | set(overrides)) - config_fields())


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, half the range)."""
    return statistics.fmean(values), (max(values) - min(values)) / 2


def run_row(
    row: str, corpus: str | None, seed: int, work: Path, tokenizer: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One `pretrain.main` run of `row`; its summary."""
    recipe, keywords, overrides = ROWS[row]
    sets = [f"{key}={json.dumps(value)}" for key, value in overrides.items()] + list(args.set or [])
    slug = row.lstrip("+").replace(" ", "_")
    out = work / f"{'stdlib' if corpus is None else 'data'}-{slug}-seed{seed}"
    done = out / "ablation_row.json"
    # what the run depends on besides its corpus and seed, the row's and its recipe's definitions included (a recipe
    # can change between invocations): a finished run is read back only when these match
    settings = {key: value for key, value in vars(args).items() if key not in ("rows", "seeds", "first_seed", "json")}
    settings["row"] = json.loads(json.dumps({"recipe": RECIPES[recipe], "keywords": keywords, "overrides": overrides}))
    if done.is_file():  # a finished run of an earlier invocation with the same --work
        record = json.loads(done.read_text(encoding="utf-8"))
        if record.get("settings") == settings:
            return record["summary"]
    stale = done.is_file()  # finished with other settings: trained again, over it
    summary = pretrain.main(
        out,
        data=corpus,
        sample_by=args.sample_by,
        max_files=args.max_files if corpus is None else None,
        tokenizer=tokenizer,
        tokenizer_vocab_size=args.vocab_size,
        preset=args.preset,
        overrides=sets or None,
        recipe=recipe,
        seed=seed,
        max_steps=args.steps,
        batch_size=args.batch,
        block_size=args.block_size,
        max_eval_blocks=args.eval_blocks,
        eval_steps=args.steps,
        save_steps=args.steps,
        save_total_limit=1,
        logging_steps=max(1, args.steps // 10),
        cache_dir=str(work / "cache"),
        progress=False,
        overwrite=stale,
        **{**{key: getattr(args, key) for key in SHARED if getattr(args, key) is not None}, **keywords},
    )
    done.write_text(json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n", encoding="utf-8")
    return summary


def ablate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every row over every corpus and seed; one result dict per (corpus, row)."""
    rows = args.rows.split(",") if args.rows else list(ROWS)
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown row(s) {unknown}; rows: {', '.join(ROWS)}")
    if "classic" not in rows:
        rows.insert(0, "classic")  # the reference every other row is read against
    corpora: list[str | None] = ([] if args.skip_stdlib else [None]) + ([args.data] if args.data else [])
    if not corpora:
        raise SystemExit("error: --skip-stdlib leaves no corpus: pass --data")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    work = Path(args.work or tempfile.mkdtemp(prefix="gptforge-recipe-"))
    results = []
    for corpus in corpora:
        name = "stdlib" if corpus is None else str(corpus)
        tokenizer = args.tokenizer
        per_row: dict[str, list[dict[str, Any]]] = {}
        skipped: dict[str, str] = {}
        for row in rows:
            if missing := missing_fields(row):
                skipped[row] = f"GPTForgeConfig lacks {', '.join(missing)}"
                continue
            per_row[row] = []
            for seed in seeds:
                summary = run_row(row, corpus, seed, work, tokenizer, args)
                # the first run's tokenizer serves every later row: one tokenizer per corpus
                tokenizer = tokenizer or str(Path(summary["output_dir"]) / "tokenizer")
                per_row[row].append(summary)
        base_bits = [s["eval_bits_per_byte"] for s in per_row["classic"]]
        base_step = statistics.fmean(s["train_runtime_s"] / s["global_step"] for s in per_row["classic"])
        noise = spread(base_bits)[1]
        for row in rows:
            if row in skipped:
                results.append({"corpus": name, "row": row, "skipped": skipped[row]})
                continue
            summaries = per_row[row]
            bits = [s["eval_bits_per_byte"] for s in summaries]
            mean, half_range = spread(bits)
            step_s = statistics.fmean(s["train_runtime_s"] / s["global_step"] for s in summaries)
            results.append(
                {
                    "corpus": name,
                    "row": row,
                    "bits_per_byte": mean,
                    "bits_per_byte_half_range": half_range,
                    "bits_per_byte_by_seed": bits,
                    "delta_vs_classic": mean - statistics.fmean(base_bits),
                    "step_time_vs_classic": step_s / base_step,
                    "step_time_s": step_s,
                    "seed_noise": noise,
                    "seeds": len(summaries),
                    "steps": summaries[0]["global_step"],
                    "tokens": summaries[0]["tokens_seen"],
                    "recipe": summaries[0]["recipe"],
                }
            )
    return results


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table, with one seed-noise line per corpus."""
    lines = [
        "| corpus | row | validation bits/byte | vs classic | step time vs classic | seeds |",
        "|---|---|---|---|---|---|",
    ]
    noise: dict[str, float] = {}
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['corpus']} | {r['row']} | skipped: {r['skipped']} | | | |")
            continue
        noise[r["corpus"]] = r["seed_noise"]
        lines.append(
            f"| {r['corpus']} | {r['row']} | {r['bits_per_byte']:.4f} ± {r['bits_per_byte_half_range']:.4f} | "
            f"{r['delta_vs_classic']:+.4f} | {r['step_time_vs_classic']:.2f}x | {r['seeds']} |"
        )
    lines += [
        f"\nseed noise ({corpus}, classic's half-range over seeds): {value:.4f} bits/byte"
        for corpus, value in noise.items()
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a text file or folder (or any pretrain --data source): the prose corpus")
    parser.add_argument(
        "--sample-by",
        default="paragraph",
        choices=["document", "paragraph", "line"],
        help="text files: one row per file, paragraph or line",
    )
    parser.add_argument("--skip-stdlib", action="store_true", help="only the --data corpus")
    parser.add_argument("--max-files", type=int, help="stdlib corpus: use this many files")
    parser.add_argument("--preset", default="tiny", help="model size (pretrain --preset)")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="config override for every row")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=16, help="blocks per step")
    parser.add_argument("--block-size", type=int, default=256, help="tokens per block")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate of every row (default: the recipe's)")
    parser.add_argument(
        "--warmup-steps", type=float, help="warmup of every row, a value < 1 a fraction (default: the recipe's)"
    )
    parser.add_argument("--vocab-size", type=int, help="tokenizer vocabulary (default: the preset's)")
    parser.add_argument("--eval-blocks", type=int, default=256, help="validation blocks (the same for every row)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per row (0, 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are --first-seed, --first-seed + 1, ...")
    parser.add_argument(
        "--tokenizer", help="tokenizer folder for every row (default: one trained on the first run's training split)"
    )
    parser.add_argument("--rows", help=f"comma-separated subset of: {', '.join(ROWS)} (classic always runs)")
    parser.add_argument(
        "--work",
        help="folder for the runs (default: a new temporary folder); a run finished there by an earlier invocation "
        "is read back, not run again, when its settings match, so seeds can run in parallel processes "
        "(--first-seed) and be tabled together",
    )
    parser.add_argument("--json", metavar="OUT", help="write the rows as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        raise SystemExit("error: --seeds and --steps must be at least 1")
    results = ablate(args)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
