"""Fine-tune a gptforge folder: sequence classification or continued causal-LM training, full or LoRA (PEFT).

The model is any gptforge folder (`gptforge pretrain`'s OUT/final, a `gptforge convert` output); a native GPT-2
or Llama folder is converted first (into OUT/base). Classification reads a text and a label column; string labels
are mapped to ids in sorted order and stored in the config's `id2label`/`label2id`. Each epoch reports validation
accuracy and macro-F1 (classification) or loss and perplexity (causal LM).

Without `--data`, the classification task is the embedded default: a chunk of standard-library code, labelled with
the top-level package it comes from (the largest packages), split by file like the pretraining corpus.

Output layout:
    OUT/final/             the fine-tuned model + tokenizer (LoRA: adapters merged in), loads with the Auto classes
    OUT/adapter/           LoRA only: the PEFT adapter (and the new head), loadable with PeftModel
    OUT/metrics.jsonl      every log and evaluation
    OUT/loss.png           train/validation loss
    OUT/confusion.png      classification: the validation confusion matrix
    OUT/results.json       the final figures

Usage:
    gptforge finetune --model runs/demo/pretrain/final --out runs/cls                   # stdlib package classifier
    gptforge finetune --model runs/x/final --out runs/sst --data sst.csv --text-column sentence --label-column label
    gptforge finetune --model runs/x/final --out runs/lora --lora --lora-r 8 --learning-rate 1e-3
    gptforge finetune --model runs/x/final --out runs/more --task causal-lm --data more_text/ --block-size 256
"""

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    EvalPrediction,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from . import data as data_lib  # noqa: E402
from .checkpointing import CompleteCheckpointCallback, GPTForgeTrainer  # noqa: E402
from .convert import SUPPORTED_MODEL_TYPES, source_model_type  # noqa: E402
from .pretrain import (  # noqa: E402
    MetricsCallback,
    check_block_size,
    cpu_only,
    load_tokenizer,
    perplexity,
    plot_losses,
    report_to_list,
    use_bf16,
)

HELP = "fine-tune a model folder: sequence classification or causal LM, full or --lora"

TASKS = ("classify", "causal-lm")
DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(true class, predicted class) counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_scores(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1; the macro average runs over the classes present in the labels or the predictions
    (as scikit-learn's default), a class's F1 being 2TP / (2TP + FP + FN)."""
    matrix = confusion_matrix(labels, predictions, num_classes)
    tp = np.diag(matrix).astype(float)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return {
        "accuracy": float(tp.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def plot_confusion(matrix: np.ndarray, names: list[str], png_path: str | os.PathLike, title: str) -> Path:
    """Row-normalised colours (recall per class), raw counts written in the cells."""
    fig_size = max(5.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(fig_size, fig_size * 0.85))
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            if matrix[i, j]:
                colour = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return Path(png_path)


class EpochReport(TrainerCallback):
    """One printed line per evaluation, so the per-epoch figures are visible without reading metrics.jsonl."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        epoch = f"epoch {state.epoch:.2f}" if state.epoch is not None else f"step {state.global_step}"
        if "eval_accuracy" in metrics:
            print(
                f"[{epoch}] validation accuracy {metrics['eval_accuracy']:.4f}, macro-F1 {metrics['eval_macro_f1']:.4f}, "
                f"loss {metrics['eval_loss']:.4f}"
            )
        elif "eval_loss" in metrics:
            print(
                f"[{epoch}] validation loss {metrics['eval_loss']:.4f}, perplexity {perplexity(metrics['eval_loss']):.2f}"
            )


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def resolve_model_folder(model: str | os.PathLike, output_dir: Path) -> Path:
    """A gptforge folder for `model`: itself, or its conversion (OUT/base) when it is a native GPT-2/Llama folder."""
    model_type = source_model_type(model)
    if model_type == "gptforge":
        return Path(model)
    if model_type in SUPPORTED_MODEL_TYPES:
        from .convert import main as convert

        base = output_dir / "base"
        print(f"{str(model)!r} is a native {model_type} folder: converting it into {base}")
        convert(model, base)
        return base
    raise ValueError(
        f"{str(model)!r} holds a {model_type!r} model; finetune reads gptforge folders, or native "
        f"{'/'.join(SUPPORTED_MODEL_TYPES)} folders (converted on the fly)"
    )


def apply_lora(model: Any, task: str, r: int, alpha: int, dropout: float, target_modules: str) -> Any:
    """Wrap `model` with PEFT LoRA adapters; only adapters (and, for classification, the new head) train."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = [name.strip() for name in target_modules.split(",") if name.strip()]
    lora_config = LoraConfig(
        task_type=TaskType.SEQ_CLS if task == "classify" else TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
    )
    peft_model = get_peft_model(model, lora_config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    print(f"LoRA r={r}: {trainable:,} trainable parameters of {total:,} ({100 * trainable / total:.2f}%)")
    return peft_model


# --------------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------------


def main(
    model: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    task: str = "classify",
    data: str | os.PathLike | None = None,
    data_config: str | None = None,
    text_column: str = data_lib.TEXT_COLUMN,
    label_column: str = data_lib.LABEL_COLUMN,
    sample_by: str = "document",
    validation_split: float = data_lib.DEFAULT_VALIDATION_SPLIT,
    max_files: int | None = None,
    num_classes: int = 10,
    max_length: int = 128,
    block_size: int | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    batch_size: int = 32,
    gradient_accumulation_steps: int = 1,
    learning_rate: float | None = None,
    weight_decay: float = 0.01,
    warmup_steps: float = 0.1,
    max_grad_norm: float = 1.0,
    epochs: float = 2.0,
    max_steps: int | None = None,
    lora: bool = False,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_target_modules: str = DEFAULT_LORA_TARGETS,
    precision: str = "auto",
    gradient_checkpointing: bool = False,
    logging_steps: int = 10,
    report_to: str = "none",
    seed: int = 0,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune and return the final validation figures (classification: `accuracy`, `macro_f1` and the
    `majority_baseline` accuracy of always predicting the most frequent training class).

    All input problems (missing model/data/column, a single class, an empty split, a sequence length beyond the
    model's positions) raise before training starts.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    out = Path(output_dir)
    source = (
        data_lib.describe_source(data)
        if data is not None
        else ("the standard-library package task" if task == "classify" else "the standard-library corpus")
    )
    folder = resolve_model_folder(model, out)
    tokenizer = load_tokenizer(folder)
    base_config = AutoConfig.from_pretrained(folder)
    length = max_length if task == "classify" else (block_size or min(256, base_config.max_position_embeddings))
    check_block_size(length, base_config, name="max_length" if task == "classify" else "block_size")
    if learning_rate is None:
        learning_rate = 1e-3 if lora else 3e-4

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_steps,
        max_grad_norm=max_grad_norm,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps is not None else -1,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=None,  # CompleteCheckpointCallback keeps the newest complete one
        logging_strategy="steps",
        logging_steps=logging_steps,
        logging_first_step=True,
        bf16=use_bf16(precision),
        activation_checkpointing=gradient_checkpointing,  # Transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        prediction_loss_only=task != "classify",
        report_to=report_to_list(report_to),
        seed=seed,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        use_cpu=cpu_only(),  # a CPU-only torchrun launch then runs DDP over gloo
        dataloader_pin_memory=not cpu_only(),
    )
    # Under torchrun, the main process reads and tokenises first; the others then hit the `datasets` cache.
    with args.main_process_first(desc="data"):
        # --- data ---
        if task == "classify":
            if data is None:
                raw = data_lib.stdlib_classification(
                    num_classes=num_classes,
                    validation_split=validation_split,
                    max_files=max_files,
                    cache_dir=cache_dir,
                )
            else:
                raw = data_lib.load_source(
                    data,
                    data_config=data_config,
                    validation_split=validation_split,
                    sample_by=sample_by,
                    seed=seed,
                    cache_dir=cache_dir,
                )
            data_lib.require_columns(raw, [text_column, label_column], source)
            raw = data_lib.drop_empty(raw, text_column, source, label_column=label_column)
            label_names = data_lib.label_names_of(raw, label_column, source)
            encoded = data_lib.encode_for_classification(
                raw, tokenizer, label_names, length, text_column, label_column, num_proc=num_proc
            )
        else:
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
            label_names = []
            encoded = data_lib.pack_for_causal_lm(
                raw, tokenizer, length, text_column, num_proc=num_proc, source=source
            )
    train_set = data_lib.subsample(encoded["train"], max_train_samples, seed)
    eval_set = data_lib.subsample(encoded["validation"], max_eval_samples, seed)

    # --- model ---
    set_seed(seed)
    if task == "classify":
        net = AutoModelForSequenceClassification.from_pretrained(
            folder,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            pad_token_id=tokenizer.pad_token_id,
            use_cache=False,
        )
        collator = DataCollatorWithPadding(tokenizer)
    else:
        net = AutoModelForCausalLM.from_pretrained(folder)
        collator = data_lib.causal_lm_collator
    if lora:
        net = apply_lora(net, task, lora_r, lora_alpha, lora_dropout, lora_target_modules)

    num_classes_found = len(label_names)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return classification_scores(prediction.label_ids, logits.argmax(-1), num_classes_found)

    trainer = GPTForgeTrainer(
        model=net,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics if task == "classify" else None,
        callbacks=[
            MetricsCallback(out / "metrics.jsonl", tokens_per_example=length if task != "classify" else None),
            EpochReport(),
            CompleteCheckpointCallback(keep=1),
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"fine-tuning ({task}{', LoRA' if lora else ''}) {folder} on {len(train_set)} examples, "
        f"{len(eval_set)} for validation, from {source}" + (f"; {len(label_names)} classes" if label_names else "")
    )
    trainer.train()

    # --- final evaluation, figures, artefacts ---
    results: dict[str, Any] = {"output_dir": str(out), "final_dir": str(out / "final"), "task": task, "lora": lora}
    if task == "classify":
        prediction = trainer.predict(eval_set)
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted, truth = logits.argmax(-1), prediction.label_ids
        scores = classification_scores(truth, predicted, num_classes_found)
        train_counts = Counter(int(x) for x in train_set["labels"])
        majority_class = train_counts.most_common(1)[0][0]
        results.update(
            accuracy=scores["accuracy"],
            macro_f1=scores["macro_f1"],
            majority_class=label_names[majority_class],
            majority_baseline=float((truth == majority_class).mean()),
            num_classes=num_classes_found,
            labels=label_names,
            eval_loss=prediction.metrics.get("test_loss"),
        )
        matrix = confusion_matrix(truth, predicted, num_classes_found)
        results["confusion_matrix"] = matrix.tolist()
        plot_confusion(
            matrix,
            label_names,
            out / "confusion.png",
            title=f"validation: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}",
        )
    else:
        metrics = trainer.evaluate()
        results.update(eval_loss=metrics["eval_loss"], eval_perplexity=perplexity(metrics["eval_loss"]))
    plot_losses(out / "metrics.jsonl", out / "loss.png", title=f"fine-tuning ({task})")

    final_dir = out / "final"
    if lora:
        trainer.model.save_pretrained(out / "adapter")
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(final_dir)
        results["adapter_dir"] = str(out / "adapter")
    else:
        trainer.model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    # the figures a model card quotes (`gptforge push`); `base_model` only when it names a Hub repo, not a local path
    published = {k: v for k, v in results.items() if k not in ("output_dir", "final_dir", "adapter_dir")}
    if not Path(folder).exists():
        published["base_model"] = str(folder)
    (final_dir / "training_summary.json").write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")

    if task == "classify":
        print(
            f"validation accuracy {results['accuracy']:.4f} (majority-class baseline {results['majority_baseline']:.4f}, "
            f"always '{results['majority_class']}'), macro-F1 {results['macro_f1']:.4f}; model in {final_dir}"
        )
    else:
        print(
            f"validation loss {results['eval_loss']:.4f} (perplexity {results['eval_perplexity']:.2f}); model in {final_dir}"
        )
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --- model and task ---
    parser.add_argument("--model", required=True, help="gptforge folder (or a native GPT-2/Llama folder)")
    parser.add_argument("--out", "--output-dir", dest="output_dir", required=True, help="run folder")
    parser.add_argument("--task", default="classify", choices=TASKS, help="sequence classification or causal LM")
    # --- data ---
    data_lib.add_data_arguments(parser, label_column=True)
    parser.add_argument(
        "--num-classes", type=int, default=10, help="default task only: how many stdlib packages to classify"
    )
    parser.add_argument("--max-length", type=int, default=128, help="classification: tokens per text (truncated)")
    parser.add_argument(
        "--block-size", type=int, default=None, help="causal LM: tokens per packed block (default 256)"
    )
    parser.add_argument("--max-train-samples", type=int, default=None, help="use a seeded subset of the train split")
    parser.add_argument(
        "--max-eval-samples", type=int, default=None, help="use a seeded subset of the validation split"
    )
    # --- optimisation ---
    parser.add_argument("--batch-size", type=int, default=32, help="examples per device per micro-step")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-steps per optimizer step")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="peak learning rate (default: 3e-4 full, 1e-3 LoRA)"
    )
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled weight decay")
    parser.add_argument("--warmup-steps", type=float, default=0.1, help="warmup steps (a value < 1 is a fraction)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm")
    parser.add_argument("--epochs", type=float, default=2.0, help="passes over the training set (one eval each)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 where the GPU supports it"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    # --- LoRA ---
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (PEFT) instead of every weight")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    parser.add_argument("--lora-alpha", type=int, default=16, help="LoRA scaling numerator (scale = alpha / r)")
    parser.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the LoRA path")
    parser.add_argument(
        "--lora-target-modules", default=DEFAULT_LORA_TARGETS, help="comma-separated module names to adapt"
    )
    # --- logging ---
    parser.add_argument("--logging-steps", type=int, default=10, help="log train loss every N steps")
    parser.add_argument("--report-to", default="none", help="Trainer integrations, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="seeds the head init, data order and subsets")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    main(
        args.model,
        args.output_dir,
        task=args.task,
        **data_lib.data_arguments(args),
        num_classes=args.num_classes,
        max_length=args.max_length,
        block_size=args.block_size,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        max_grad_norm=args.max_grad_norm,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lora=args.lora,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        lora_target_modules=args.lora_target_modules,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        logging_steps=args.logging_steps,
        report_to=args.report_to,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return 0
