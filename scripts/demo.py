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

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

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


def main(
    output_dir: str | os.PathLike = "runs/demo",
    *,
    vocab_size: int = 4096,
    pretrain_steps: int = 800,
    block_size: int = 256,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    overrides: list[str] | None = None,
    max_new_tokens: int = 48,
    eval_documents: int | None = None,
    classifier_epochs: float = 2.0,
    classifier_train_samples: int | None = 3000,
    classifier_eval_samples: int | None = 1000,
    classifier_max_length: int = 128,
    classifier_learning_rate: float = 1e-3,
    max_files: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every stage and return the figures (`perplexity`, `accuracy`, `majority_baseline`, times, ...).

    The stages call the subcommands' own `main`s, so the demo exercises exactly what users run.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str) -> None:
        times[name] = round(time.perf_counter() - started - sum(times.values()), 1)

    print("== 1/5 tokenizer ==")
    tok = train_tokenizer.main(
        out / "tokenizer", vocab_size=vocab_size, max_files=max_files, seed=seed, cache_dir=cache_dir
    )
    stage("tokenizer")

    print("== 2/5 pretrain (tiny preset) ==")
    lm = pretrain.main(
        out / "pretrain",
        tokenizer=out / "tokenizer",
        preset="tiny",
        overrides=overrides,
        max_files=max_files,
        block_size=block_size,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,
        max_steps=pretrain_steps,
        eval_steps=max(1, pretrain_steps // 4),
        max_eval_blocks=64,
        save_steps=max(1, pretrain_steps // 2),
        save_total_limit=2,
        logging_steps=max(1, pretrain_steps // 40),
        overwrite=True,
        seed=seed,
        cache_dir=cache_dir,
        progress=progress,
    )
    final = Path(lm["final_dir"])
    stage("pretrain")

    print(f"== 3/5 generate (greedy, repetition penalty {REPETITION_PENALTY}) ==")
    generations = generate.main(
        final, PROMPTS, max_new_tokens=max_new_tokens, repetition_penalty=REPETITION_PENALTY, batch_size=1, seed=seed
    )
    (out / "generations.json").write_text(json.dumps(generations, indent=2) + "\n")
    stage("generate")

    print("== 4/5 validation perplexity ==")
    ppl = evaluate.main(
        final,
        max_files=max_files,
        block_size=block_size,
        stride=block_size // 2,
        max_documents=eval_documents,
        seed=seed,
        cache_dir=cache_dir,
    )
    stage("evaluate")

    print("== 5/5 fine-tune a classifier: which stdlib package is this code from? ==")
    cls = finetune.main(
        final,
        out / "classifier",
        task="classify",
        max_files=max_files,
        max_length=classifier_max_length,
        max_train_samples=classifier_train_samples,
        max_eval_samples=classifier_eval_samples,
        epochs=classifier_epochs,
        learning_rate=classifier_learning_rate,
        batch_size=32,
        logging_steps=10,
        seed=seed,
        cache_dir=cache_dir,
        progress=progress,
    )
    stage("finetune")
    times["total"] = round(time.perf_counter() - started, 1)

    summary = {
        "tokenizer_vocab_size": tok["vocab_size"],
        "bytes_per_token": round(tok["bytes_per_token"], 3),
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
        f"{summary['pretrain_tokens']:,} tokens\n"
        f"validation           perplexity {summary['validation_perplexity']:.2f} "
        f"({summary['validation_bits_per_byte']:.3f} bits/byte, {summary['perplexity_tokens']:,} tokens)\n"
        f"classifier           accuracy {summary['classifier_accuracy']:.3f}, macro-F1 {summary['classifier_macro_f1']:.3f} "
        f"over {summary['classifier_classes']} packages\n"
        f"majority baseline    accuracy {summary['majority_baseline']:.3f} (always '{summary['majority_class']}')\n"
        f"time                 {times}\n"
        f"artefacts            {out}/"
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "--output-dir", dest="output_dir", default="runs/demo", help="folder for everything")
    # --- language model ---
    parser.add_argument("--vocab-size", type=int, default=4096, help="tokenizer vocabulary")
    parser.add_argument("--pretrain-steps", type=int, default=800, help="optimizer steps of pretraining")
    parser.add_argument("--block-size", type=int, default=256, help="tokens per training block")
    parser.add_argument("--batch-size", type=int, default=16, help="blocks per step")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="peak pretraining learning rate")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE", help="override the tiny config"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens generated per prompt")
    parser.add_argument(
        "--eval-documents", type=int, default=None, help="validation files scored for perplexity (default: all)"
    )
    # --- classifier ---
    parser.add_argument("--classifier-epochs", type=float, default=2.0, help="fine-tuning epochs")
    parser.add_argument("--classifier-train-samples", type=int, default=3000, help="training chunks (seeded subset)")
    parser.add_argument("--classifier-eval-samples", type=int, default=1000, help="validation chunks (seeded subset)")
    parser.add_argument("--classifier-max-length", type=int, default=128, help="tokens per chunk")
    parser.add_argument("--classifier-learning-rate", type=float, default=1e-3, help="fine-tuning learning rate")
    # --- misc ---
    parser.add_argument("--max-files", type=int, default=None, help="use this many stdlib files (smoke runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage")
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder")
    parser.add_argument("--progress", action="store_true", help="show Trainer progress bars")


def run(args: argparse.Namespace) -> int:
    main(
        args.output_dir,
        vocab_size=args.vocab_size,
        pretrain_steps=args.pretrain_steps,
        block_size=args.block_size,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        overrides=args.overrides,
        max_new_tokens=args.max_new_tokens,
        eval_documents=args.eval_documents,
        classifier_epochs=args.classifier_epochs,
        classifier_train_samples=args.classifier_train_samples,
        classifier_eval_samples=args.classifier_eval_samples,
        classifier_max_length=args.classifier_max_length,
        classifier_learning_rate=args.classifier_learning_rate,
        max_files=args.max_files,
        seed=args.seed,
        cache_dir=args.cache_dir,
        progress=args.progress,
    )
    return 0
