"""The main job, end to end on a CPU in minutes: tokenizer, pretraining, generation, perplexity, a classifier.

On the Python standard library of the running interpreter (no download): train a 4096-token BPE tokenizer,
pretrain the `tiny` preset, print greedy continuations of a few code prompts, report validation perplexity
(sliding window), then fine-tune a classifier that tells which top-level stdlib package a code chunk comes from and
compare its accuracy with the majority-class baseline. Every artefact stays under OUT:

    OUT/tokenizer/                       the tokenizer
    OUT/pretrain/final/                  the language model (+ checkpoints, metrics.jsonl, loss.png)
    OUT/classifier/final/                the classifier (+ metrics.jsonl, loss.png, confusion.png, results.json)
    OUT/generations.json                 the prompts and their continuations
    OUT/summary.json                     every figure printed at the end, with the time of each stage

The defaults are sized for a 2-core CPU and a 15-minute budget (`make demo`); a rerun starts over.

Usage:
    gptforge demo --out runs/demo
    gptforge demo --out runs/demo-long --pretrain-steps 1000 --classifier-epochs 3
"""

import json
import os
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from ..training.options import option, typed_main
from ..training.recipes import DEFAULT_RECIPE, RECIPES
from . import evaluate, finetune, generate, pretrain, train_tokenizer

HELP = "the main job: tokenizer, pretrain tiny, generate, perplexity, classifier vs baseline (CPU, minutes)"

PROMPTS = [
    "def fibonacci(n):\n",
    "import os\nimport sys\n\n\ndef main(",
    "class Stack:\n    def __init__(self):\n        self.",
    "    for i in range(len(",
]
# A model this small loops under plain greedy decoding; a mild penalty shows more of what it learned.
REPETITION_PENALTY = 1.2


@dataclass
class DemoOptions:
    """Every flag of `gptforge demo`, and the keywords of `main`."""

    output_dir: str | os.PathLike = option("runs/demo", "folder for everything", flags=["--out", "--output-dir"])
    _: KW_ONLY
    # --- language model ---
    vocab_size: int = option(4096, "tokenizer vocabulary")
    pretrain_steps: int = option(800, "optimizer steps of pretraining")
    block_size: int = option(256, "tokens per training block")
    batch_size: int = option(16, "blocks per step")
    learning_rate: float = option(3e-3, "peak pretraining learning rate (every recipe)")
    warmup_steps: float | None = option(None, "pretraining warmup, a value < 1 a fraction (default: the recipe's)")
    recipe: str = option(
        DEFAULT_RECIPE, f"pretraining recipe ({', '.join(RECIPES)}): `--recipe classic` is the 2019 baseline"
    )
    overrides: list[str] | None = option(None, "override the tiny config", flags=["--set"], metavar="FIELD=VALUE")
    max_new_tokens: int = option(48, "tokens generated per prompt")
    eval_documents: int | None = option(None, "validation files scored for perplexity (default: all)")
    # --- classifier ---
    classifier_epochs: float = option(2.0, "fine-tuning epochs")
    classifier_train_samples: int | None = option(3000, "training chunks (seeded subset)")
    classifier_eval_samples: int | None = option(1000, "validation chunks (seeded subset)")
    classifier_max_length: int = option(128, "tokens per chunk")
    classifier_learning_rate: float = option(1e-3, "fine-tuning learning rate")
    # --- misc ---
    max_files: int | None = option(None, "use this many stdlib files (smoke runs)")
    seed: int = option(0, "seed of every stage")
    cache_dir: str | None = option(None, "datasets cache folder")
    progress: bool = option(False, "show Trainer progress bars")


@typed_main(DemoOptions)
def main(options: DemoOptions) -> dict[str, Any]:
    """Run every stage and return the figures (`perplexity`, `accuracy`, `majority_baseline`, times, ...).

    The stages call the subcommands' own `main`s, so the demo exercises exactly what users run.
    """
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str) -> None:
        times[name] = round(time.perf_counter() - started - sum(times.values()), 1)

    print("== 1/5 tokenizer ==")
    tok = train_tokenizer.main(
        out / "tokenizer",
        vocab_size=options.vocab_size,
        max_files=options.max_files,
        seed=options.seed,
        cache_dir=options.cache_dir,
    )
    stage("tokenizer")

    print(f"== 2/5 pretrain (tiny preset, {options.recipe} recipe) ==")
    lm = pretrain.main(
        out / "pretrain",
        tokenizer=out / "tokenizer",
        preset="tiny",
        overrides=options.overrides,
        max_files=options.max_files,
        block_size=options.block_size,
        batch_size=options.batch_size,
        recipe=options.recipe,
        learning_rate=options.learning_rate,
        **({} if options.warmup_steps is None else {"warmup_steps": options.warmup_steps}),
        max_steps=options.pretrain_steps,
        eval_steps=max(1, options.pretrain_steps // 4),
        max_eval_blocks=64,
        save_steps=max(1, options.pretrain_steps // 2),
        save_total_limit=2,
        logging_steps=max(1, options.pretrain_steps // 40),
        overwrite=True,
        seed=options.seed,
        cache_dir=options.cache_dir,
        progress=options.progress,
    )
    final = Path(lm["final_dir"])
    stage("pretrain")

    print(f"== 3/5 generate (greedy, repetition penalty {REPETITION_PENALTY}) ==")
    generations = generate.main(
        final,
        PROMPTS,
        max_new_tokens=options.max_new_tokens,
        repetition_penalty=REPETITION_PENALTY,
        batch_size=1,
        seed=options.seed,
    )
    (out / "generations.json").write_text(json.dumps(generations, indent=2) + "\n")
    stage("generate")

    print("== 4/5 validation perplexity ==")
    ppl = evaluate.main(
        final,
        max_files=options.max_files,
        block_size=options.block_size,
        stride=options.block_size // 2,
        max_documents=options.eval_documents,
        seed=options.seed,
        cache_dir=options.cache_dir,
    )
    stage("evaluate")

    print("== 5/5 fine-tune a classifier: which stdlib package is this code from? ==")
    cls = finetune.main(
        final,
        out / "classifier",
        task="classify",
        max_files=options.max_files,
        max_length=options.classifier_max_length,
        max_train_samples=options.classifier_train_samples,
        max_eval_samples=options.classifier_eval_samples,
        epochs=options.classifier_epochs,
        learning_rate=options.classifier_learning_rate,
        batch_size=32,
        logging_steps=10,
        seed=options.seed,
        cache_dir=options.cache_dir,
        progress=options.progress,
    )
    stage("finetune")
    times["total"] = round(time.perf_counter() - started, 1)

    summary = {
        "tokenizer_vocab_size": tok["vocab_size"],
        "bytes_per_token": round(tok["bytes_per_token"], 3),
        "recipe": options.recipe,
        "model_parameters": lm["num_parameters"],
        "pretrain_steps": lm["global_step"],
        "pretrain_tokens": lm["tokens_seen"],
        "pretrain_eval_loss": lm["eval_loss"],
        "validation_perplexity": ppl["perplexity"],
        "validation_bits_per_byte": ppl["bits_per_byte"],
        "perplexity_tokens": ppl["tokens"],
        "classifier_classes": cls["num_classes"],
        "classifier_accuracy": cls["accuracy"],
        "classifier_macro_f1": cls["macro_f1"],
        "majority_baseline": cls["majority_baseline"],
        "majority_class": cls["majority_class"],
        "seconds": times,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        "\n== demo summary ==\n"
        f"tokenizer            {summary['tokenizer_vocab_size']} tokens, {summary['bytes_per_token']} bytes/token\n"
        f"language model       {summary['model_parameters'] / 1e6:.2f}M parameters, {summary['pretrain_steps']} steps, "
        f"{summary['pretrain_tokens']:,} tokens, recipe {options.recipe}\n"
        f"validation           perplexity {summary['validation_perplexity']:.2f} "
        f"({summary['validation_bits_per_byte']:.3f} bits/byte, {summary['perplexity_tokens']:,} tokens)\n"
        f"classifier           accuracy {summary['classifier_accuracy']:.3f}, macro-F1 {summary['classifier_macro_f1']:.3f} "
        f"over {summary['classifier_classes']} packages\n"
        f"majority baseline    accuracy {summary['majority_baseline']:.3f} (always '{summary['majority_class']}')\n"
        f"time                 {times}\n"
        f"artefacts            {out}/"
    )
    return summary
