"""Pretrain a gptforge causal LM with Transformers' `Trainer`: AdamW, warmup + cosine decay, checkpoints, resume.

The model comes from a preset (`--preset tiny`), a config JSON (`--config cfg.json`, or a model folder), plus any
`--set field=value` overrides; its vocabulary size and special-token ids always come from the tokenizer. Without
`--tokenizer`, one is trained on the training split first (saved in OUT/tokenizer). Without `--data`, the corpus
is the Python standard library of the running interpreter.

Output layout:
    OUT/checkpoint-N/    model, tokenizer, optimizer, scheduler, RNG and trainer state, and the completion marker
                         written last (`checkpointing.py`): --resume reads only marked, verified checkpoints
    OUT/final/           model + tokenizer: AutoModelForCausalLM / AutoTokenizer.from_pretrained("OUT/final")
    OUT/metrics.jsonl    one JSON object per log/eval: step, tokens seen, loss, lr, eval loss and perplexity
    OUT/loss.png         train and validation loss against tokens seen

Usage:
    gptforge pretrain --out runs/tiny                                   # tiny preset on the stdlib corpus
    gptforge pretrain --out runs/tiny --tokenizer runs/tok --max-steps 300 --learning-rate 3e-3
    gptforge pretrain --out runs/x --data corpus/ --preset llama-30m --set num_hidden_layers=4 --block-size 512
    gptforge pretrain --out runs/tiny --resume                          # continue from the latest checkpoint
    torchrun --nproc_per_node 2 -m gptforge.scripts.cli pretrain --out runs/ddp ...
    accelerate launch --config_file scripts/accelerate_fsdp.yaml -m gptforge.scripts.cli pretrain --out runs/fsdp ...

Ctrl-C or a crash stops training; the last complete checkpoint stays usable by `--resume`, and a NaN or infinite
loss stops the run before the optimizer applies it.
"""

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from ..compiling import compile_blocks  # noqa: E402
from ..configuration import GPTForgeConfig  # noqa: E402
from ..tokenization import train_tokenizer  # noqa: E402
from . import data as data_lib  # noqa: E402
from . import distributed  # noqa: E402
from .checkpointing import (  # noqa: E402  (re-exported: the checkpoint rules live in one module)
    CompleteCheckpointCallback,
    GPTForgeTrainer,
    NonFiniteLossError,
    find_latest_checkpoint,
    list_checkpoints,
    remove_unfinished,
)

HELP = "pretrain a causal LM (preset/config/--set) with Trainer: warmup+cosine AdamW, checkpoints, --resume"

# --------------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------------


def _config_keys() -> set[str]:
    return {f.name for f in fields(GPTForgeConfig)} | set(GPTForgeConfig.attribute_map)


def parse_overrides(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """`["hidden_size=64", "is_causal=false"]` -> `{"hidden_size": 64, "is_causal": False}`.

    Values are read as JSON (numbers, true/false/null, lists, objects) and otherwise kept as strings; Python's
    True/False/None spellings are accepted too. Unknown field names are a `ValueError` (a typo would otherwise be
    stored silently on the config).
    """
    if items is None:
        return {}
    if isinstance(items, dict):
        pairs = dict(items)
    else:
        pairs = {}
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set expects field=value, got {item!r}")
            raw = raw.strip()
            python_literals = {"True": True, "False": False, "None": None}
            if raw in python_literals:
                value = python_literals[raw]
            else:
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError:
                    value = raw
            pairs[key.strip()] = value
    unknown = sorted(set(pairs) - _config_keys())
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; GPTForgeConfig fields: {sorted(_config_keys())}")
    return pairs


def build_config(
    preset: str | None = "tiny", config: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> GPTForgeConfig:
    """A config from a preset or a config JSON (file, or a folder holding config.json), with overrides applied."""
    overrides = dict(overrides or {})
    if config is not None:
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config JSON at {str(path)!r}")
        values = json.loads(path.read_text())
        values.pop("model_type", None)
        return GPTForgeConfig.from_dict({**values, **overrides})
    return GPTForgeConfig.from_preset(preset or "tiny", **overrides)


def apply_tokenizer(config: GPTForgeConfig, tokenizer: Any, explicit_vocab: int | None) -> None:
    """Vocabulary size and special-token ids from the tokenizer (a larger explicit vocab_size is kept: padding)."""
    size = len(tokenizer)
    if explicit_vocab is not None and explicit_vocab < size:
        raise ValueError(f"vocab_size={explicit_vocab} is smaller than the tokenizer's {size} tokens")
    config.vocab_size = explicit_vocab or size
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def check_block_size(block_size: int, config: Any, name: str = "block_size") -> None:
    """A sequence longer than the model's positions fails before any data is tokenised."""
    limit = config.max_position_embeddings
    if block_size > limit:
        flag = "--" + name.replace("_", "-")
        raise ValueError(
            f"{name}={block_size} is larger than the model's max_position_embeddings={limit}; "
            f"use {flag} {limit} or less (or --set max_position_embeddings={block_size} for a new model)"
        )


# --------------------------------------------------------------------------------------------------------------------
# Metrics: JSON lines + loss plot
# --------------------------------------------------------------------------------------------------------------------


class MetricsCallback(TrainerCallback):
    """Appends every log (train and eval) to a JSON-lines file, with tokens seen and eval perplexity.

    `tokens_per_example` is the block size of a language model (None for a classifier: no tokens, no perplexity);
    tokens seen = step * per-device batch * gradient accumulation * processes * tokens per example. On resume, lines
    from beyond the resumed step (written by the interrupted run) are dropped, so the file has one history.
    """

    def __init__(self, path: str | os.PathLike, tokens_per_example: int | None) -> None:
        self.path = Path(path)
        self.tokens_per_example = tokens_per_example

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        records = [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        if self.tokens_per_example:
            global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            record["tokens"] = state.global_step * global_batch * self.tokens_per_example
        record.update(logs)
        if "eval_loss" in logs and self.tokens_per_example:  # a language model's loss (not a classifier's)
            record["eval_perplexity"] = perplexity(logs["eval_loss"])
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "loss") -> Path | None:
    """Train and validation loss against tokens seen (or steps when tokens are not recorded)."""
    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    x_key = "tokens" if all("tokens" in r for r in train + evals) else "step"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if train:
        ax.plot([r[x_key] for r in train], [r["loss"] for r in train], label="train", linewidth=1)
    if evals:
        ax.plot([r[x_key] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation")
    ax.set_xlabel("tokens seen" if x_key == "tokens" else "optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return Path(png_path)


# --------------------------------------------------------------------------------------------------------------------
# Trainer settings shared with finetune
# --------------------------------------------------------------------------------------------------------------------


def use_bf16(precision: str) -> bool:
    """ "auto": bf16 where the hardware has it (a CUDA GPU that supports it), fp32 otherwise."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_only() -> bool:
    """No accelerator: Trainer must be told (`use_cpu`), or a torchrun launch would not set up DDP over gloo."""
    accelerators = (torch.cuda, getattr(torch, "xpu", None), getattr(torch.backends, "mps", None))
    return not any(module is not None and module.is_available() for module in accelerators)


def report_to_list(report_to: str | list[str]) -> list[str] | str:
    if isinstance(report_to, list):
        return report_to
    return "none" if report_to in ("", "none") else [name.strip() for name in report_to.split(",")]


def load_tokenizer(path: str | os.PathLike) -> Any:
    if not Path(path).exists():
        raise FileNotFoundError(f"no tokenizer at {str(path)!r}: expected a folder with tokenizer.json")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------------


def main(
    output_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    data_config: str | None = None,
    text_column: str = data_lib.TEXT_COLUMN,
    sample_by: str = "document",
    validation_split: float = data_lib.DEFAULT_VALIDATION_SPLIT,
    max_files: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    tokenizer_vocab_size: int | None = None,
    preset: str | None = None,
    config: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    block_size: int = 256,
    batch_size: int = 16,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 6e-4,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    warmup_steps: float = 0.05,
    max_grad_norm: float = 1.0,
    max_steps: int | None = None,
    epochs: float = 1.0,
    eval_steps: int = 100,
    max_eval_blocks: int | None = 256,
    save_steps: int = 100,
    save_total_limit: int | None = 3,
    logging_steps: int = 10,
    precision: str = "auto",
    gradient_checkpointing: bool = False,
    compile: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    report_to: str = "none",
    seed: int = 0,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain and return the final figures (`global_step`, `eval_loss`, `eval_perplexity`, `final_dir`, ...).

    Everything that can be wrong with the inputs (missing data, column, block size, a folder with checkpoints but
    no `--resume`) fails here before the first step, so a long run never dies on a typo after tokenising.
    """
    distributed.check_launch()  # before anything: `accelerate launch --cpu` would train one process, not N
    out = Path(output_dir)
    metrics_path, png_path, final_dir = out / "metrics.jsonl", out / "loss.png", out / "final"
    own_tokenizer = out / "tokenizer"
    source = data_lib.describe_source(data)

    # --- checks that need nothing loaded ---
    existing = list_checkpoints(out)
    if existing and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{str(out)!r} already holds checkpoints ({existing[-1][1].name}); pass --resume to continue "
                "from the latest, or --overwrite to start over"
            )
        # ignore_errors / missing_ok: under torchrun every process runs this at once
        for _, folder in existing:
            shutil.rmtree(folder, ignore_errors=True)
        for stale in (final_dir, own_tokenizer, metrics_path, png_path):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    # any number of processes may have written it: the checkpoint's own RNG files are what must be complete
    resume_from = find_latest_checkpoint(out) if resume else None
    if resume and resume_from is None:
        print(f"--resume: no complete checkpoint in {str(out)!r}; starting from scratch")
    resize_note = distributed.check_resume_world_size(resume_from, world_size) if resume_from else None
    if preset is not None and config is not None:
        raise ValueError("pass either a preset or a config JSON, not both")
    override_values = parse_overrides(overrides)
    model_config = build_config(preset, config, override_values)
    if resume_from is not None:
        # The run continues as it was saved: the checkpoint's architecture, whatever the flags say now.
        model_config = GPTForgeConfig.from_pretrained(resume_from)
        override_values["vocab_size"] = model_config.vocab_size  # keep its (possibly padded) vocabulary
    check_block_size(block_size, model_config)

    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        lr_scheduler_type="cosine_with_min_lr" if min_lr_ratio > 0 else "cosine",
        lr_scheduler_kwargs={"min_lr_rate": min_lr_ratio} if min_lr_ratio > 0 else {},
        warmup_steps=warmup_steps,
        max_grad_norm=max_grad_norm,
        max_steps=max_steps if max_steps is not None else -1,
        num_train_epochs=epochs,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=None,  # CompleteCheckpointCallback rotates, after a checkpoint is marked complete
        logging_strategy="steps",
        logging_steps=logging_steps,
        logging_first_step=True,
        bf16=use_bf16(precision),
        activation_checkpointing=gradient_checkpointing,  # Transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        prediction_loss_only=True,  # eval needs the loss only; never gather (B, T, vocab) logits
        report_to=report_to_list(report_to),
        seed=seed,
        ddp_find_unused_parameters=False,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        use_cpu=cpu_only(),  # a CPU-only torchrun launch then runs DDP over gloo
        dataloader_pin_memory=not cpu_only(),
    )

    # Under torchrun / accelerate, the main process loads, trains the tokenizer and tokenises first; the others
    # then read its files and the `datasets` cache instead of racing it.
    with args.main_process_first(desc="data and tokenizer"):
        # --- data ---
        raw = data_lib.load_texts(
            data,
            text_column,
            data_config=data_config,
            validation_split=validation_split,
            sample_by=sample_by,
            seed=seed,
            cache_dir=cache_dir,
            max_files=max_files,
        )

        # --- tokenizer: given, reused from an earlier run of this folder, or trained now ---
        if resume_from is not None and (resume_from / "tokenizer.json").is_file():
            tok = load_tokenizer(resume_from)  # the tokenizer the checkpoint was trained with
        elif tokenizer is not None:
            tok = load_tokenizer(tokenizer)
        elif (own_tokenizer / "tokenizer.json").is_file():
            tok = load_tokenizer(own_tokenizer)
        else:
            vocab = tokenizer_vocab_size or model_config.vocab_size
            print(f"training a {vocab}-token tokenizer on the training split of {source}")
            tok = train_tokenizer(raw["train"], vocab, text_column=text_column)
            own_tokenizer.mkdir(parents=True, exist_ok=True)
            tok.save_pretrained(own_tokenizer)
        apply_tokenizer(model_config, tok, override_values.get("vocab_size"))
        tok.model_max_length = model_config.max_position_embeddings

        blocks = data_lib.pack_for_causal_lm(raw, tok, block_size, text_column, num_proc=num_proc, source=source)
    train_blocks = blocks["train"]
    eval_blocks = data_lib.subsample(blocks["validation"], max_eval_blocks, seed)

    # --- model ---
    set_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config)
    model.generation_config.bos_token_id = model_config.bos_token_id
    model.generation_config.eos_token_id = model_config.eos_token_id
    model.generation_config.pad_token_id = model_config.pad_token_id
    n_params = model.num_parameters()
    if compile:
        compile_blocks(model)  # in place: checkpoints keep the eager names

    trainer = GPTForgeTrainer(
        model=model,
        args=args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        data_collator=data_lib.causal_lm_collator,
        processing_class=tok,
        callbacks=[
            MetricsCallback(metrics_path, tokens_per_example=block_size),
            CompleteCheckpointCallback(keep=save_total_limit),
        ],
    )
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        for leftover in remove_unfinished(out):  # checkpoints and staged saves a crash cut short
            print(f"removed {leftover.name}: its save never finished")
        if resize_note:
            print(f"note: {resize_note}")
        engine = "FSDP2" if trainer.is_fsdp_enabled else ("DDP" if args.world_size > 1 else "one process")
        print(
            f"pretraining {n_params / 1e6:.2f}M parameters on {len(train_blocks)} blocks of {block_size} tokens "
            f"({len(eval_blocks)} validation blocks) from {source}; {engine}: {args.world_size} process(es) x "
            f"{batch_size} blocks x {gradient_accumulation_steps} accumulation = global batch "
            f"{batch_size * gradient_accumulation_steps * args.world_size}"
            + (f"; resuming from {resume_from.name}" if resume_from else "")
        )

    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        if trainer.is_world_process_zero():
            plot_losses(metrics_path, png_path, title=f"pretraining {out} (interrupted)")
            latest = find_latest_checkpoint(out)
            print(
                f"\ninterrupted at step {trainer.state.global_step}; "
                + (
                    f"last complete checkpoint: {latest}. Continue with --resume."
                    if latest
                    else "no complete checkpoint yet."
                )
            )
        raise

    trainer.save_model(str(final_dir))  # model, generation config, tokenizer; only the main process writes
    if trainer.is_world_process_zero():
        plot_losses(metrics_path, png_path, title=f"pretraining {out}")
    evals = [r for r in read_metrics(metrics_path) if "eval_loss" in r]
    last_eval = evals[-1] if evals else {}
    global_batch = batch_size * gradient_accumulation_steps * args.world_size
    summary = {
        "output_dir": str(out),
        "final_dir": str(final_dir),
        "num_parameters": n_params,
        "global_step": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * global_batch * block_size,
        "train_loss": result.training_loss,
        "eval_loss": last_eval.get("eval_loss"),
        "eval_perplexity": last_eval.get("eval_perplexity"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "world_size": args.world_size,
    }
    if trainer.is_world_process_zero():
        # the figures a model card quotes (`gptforge push`); local paths stay out of a published folder
        published = {k: v for k, v in summary.items() if k not in ("output_dir", "final_dir")}
        (final_dir / "training_summary.json").write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")
        print(
            f"done: step {summary['global_step']}, {summary['tokens_seen']:,} tokens, "
            f"validation loss {summary['eval_loss']:.4f} (perplexity {summary['eval_perplexity']:.2f}); "
            f"model in {final_dir}"
            if summary["eval_loss"] is not None
            else f"done: step {summary['global_step']}; model in {final_dir}"
        )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --- output ---
    parser.add_argument(
        "--out", "--output-dir", dest="output_dir", required=True, help="run folder (checkpoints, final/, metrics)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="delete checkpoints already in --out and start over")
    # --- data ---
    data_lib.add_data_arguments(parser)
    parser.add_argument("--block-size", type=int, default=256, help="tokens per training example (packed)")
    parser.add_argument(
        "--max-eval-blocks", type=int, default=256, help="validation blocks per evaluation (seeded subset)"
    )
    # --- tokenizer ---
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder; default: train one into OUT/tokenizer")
    parser.add_argument(
        "--tokenizer-vocab-size", type=int, default=None, help="vocab size when training one (default: the config's)"
    )
    # --- model ---
    parser.add_argument(
        "--preset", default=None, choices=GPTForgeConfig.list_presets(), help="named size (default: tiny)"
    )
    parser.add_argument("--config", default=None, help="config JSON file, or a folder holding config.json")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field (repeatable), e.g. --set hidden_size=256 --set tie_word_embeddings=true",
    )
    # --- optimisation ---
    parser.add_argument("--batch-size", type=int, default=16, help="examples per device per micro-step")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-steps per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=6e-4, help="peak AdamW learning rate")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to this fraction of the peak")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decoupled weight decay")
    parser.add_argument(
        "--warmup-steps", type=float, default=0.05, help="linear warmup steps (a value < 1 is a fraction)"
    )
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (0 disables)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training blocks")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 where the GPU supports it"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each decoder block (faster steps after a first one that compiles; see README Performance)",
    )
    # --- evaluation, checkpoints, logging ---
    parser.add_argument("--eval-steps", type=int, default=100, help="evaluate (loss, perplexity) every N steps")
    parser.add_argument("--save-steps", type=int, default=100, help="write a checkpoint every N steps")
    parser.add_argument("--save-total-limit", type=int, default=3, help="keep at most this many checkpoints")
    parser.add_argument("--logging-steps", type=int, default=10, help="log train loss every N steps")
    parser.add_argument(
        "--report-to", default="none", help="Trainer integrations, comma-separated (tensorboard, wandb, ...)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds init, data order and the validation split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        main(
            args.output_dir,
            **data_lib.data_arguments(args),
            tokenizer=args.tokenizer,
            tokenizer_vocab_size=args.tokenizer_vocab_size,
            preset=args.preset,
            config=args.config,
            overrides=args.overrides,
            block_size=args.block_size,
            batch_size=args.batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            learning_rate=args.learning_rate,
            min_lr_ratio=args.min_lr_ratio,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            max_grad_norm=args.max_grad_norm,
            max_steps=args.max_steps,
            epochs=args.epochs,
            eval_steps=args.eval_steps,
            max_eval_blocks=args.max_eval_blocks,
            save_steps=args.save_steps,
            save_total_limit=args.save_total_limit,
            logging_steps=args.logging_steps,
            precision=args.precision,
            gradient_checkpointing=args.gradient_checkpointing,
            compile=args.compile,
            resume=args.resume,
            overwrite=args.overwrite,
            report_to=args.report_to,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        return 130
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
