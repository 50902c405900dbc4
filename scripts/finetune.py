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

import json
import os
from collections import Counter
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Literal

from ..training.defaults import LABEL_COLUMN
from ..training.errors import UsageError
from ..training.lora import DEFAULT_LORA_TARGETS
from ..training.options import (
    DataOptions,
    TokenizeOptions,
    TrainerOptions,
    option,
    typed_main,
)

HELP = "fine-tune a model folder: sequence classification or causal LM, full or --lora"

TASKS = ("classify", "causal-lm")


@dataclass
class FinetuneOptions(TrainerOptions, TokenizeOptions, DataOptions):
    """Every flag of `gptforge finetune`, and the keywords of `main`."""

    model: str | os.PathLike = option(help="gptforge folder (or a native GPT-2/Llama folder)")
    output_dir: str | os.PathLike = option(help="run folder", flags=["--out", "--output-dir"])
    _: KW_ONLY
    task: Literal["classify", "causal-lm"] = option("classify", "sequence classification or causal LM")
    label_column: str = option(LABEL_COLUMN, "column holding the class label")
    num_classes: int = option(10, "default task only: how many stdlib packages to classify")
    max_length: int = option(128, "classification: tokens per text (truncated)")
    block_size: int | None = option(None, "causal LM: tokens per packed block (default 256)")
    max_train_samples: int | None = option(None, "use a seeded subset of the train split")
    max_eval_samples: int | None = option(None, "use a seeded subset of the validation split")
    # the Trainer knobs whose fine-tuning defaults differ from pretraining's
    batch_size: int = option(32, "examples per device per micro-step")
    learning_rate: float | None = option(None, "peak learning rate (default: 3e-4 full, 1e-3 LoRA)")
    weight_decay: float = option(0.01, "AdamW decoupled weight decay")
    warmup_steps: float = option(0.1, "warmup steps (a value < 1 is a fraction)")
    epochs: float = option(2.0, "passes over the training set (one eval each)")
    lora: bool = option(False, "train LoRA adapters (PEFT) instead of every weight")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA path")
    lora_target_modules: str = option(DEFAULT_LORA_TARGETS, "comma-separated module names to adapt")


def resolve_model_folder(model: str | os.PathLike, output_dir: Path) -> Path:
    """A gptforge folder for `model`: itself, or its conversion (OUT/base) when it is a native GPT-2/Llama folder."""
    from ..run_files import BASE_DIR
    from ..training.folders import SUPPORTED_MODEL_TYPES, source_model_type
    from .convert import main as convert

    model_type = source_model_type(model)
    if model_type == "gptforge":
        return Path(model)
    if model_type in SUPPORTED_MODEL_TYPES:
        base = output_dir / BASE_DIR
        print(f"{str(model)!r} is a native {model_type} folder: converting it into {base}")
        convert(model, base)
        return base
    raise UsageError(
        f"{str(model)!r} holds a {model_type!r} model; finetune reads gptforge folders, or native "
        f"{'/'.join(SUPPORTED_MODEL_TYPES)} folders (converted on the fly)"
    )


@typed_main(FinetuneOptions)
def main(options: FinetuneOptions) -> dict[str, Any]:
    """Fine-tune and return the final validation figures (classification: `accuracy`, `macro_f1` and the
    `majority_baseline` accuracy of always predicting the most frequent training class).

    All input problems (missing model/data/column, a single class, an empty split, a sequence length beyond the
    model's positions) raise before training starts.
    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        EvalPrediction,
        set_seed,
    )

    from ..run_files import (
        ADAPTER_DIR,
        CHECKPOINTS_DIR,
        CONFUSION_PLOT,
        FINAL_DIR,
        LOSS_PLOT,
        METRICS_FILE,
        RESULTS_FILE,
        TRAINING_SUMMARY_FILE,
    )
    from ..training import corpus, encoding, sources
    from ..training.arguments import training_arguments
    from ..training.config import check_block_size
    from ..training.folders import load_tokenizer
    from ..training.lora import apply_lora
    from ..training.metrics import (
        EpochReport,
        MetricsCallback,
        classification_scores,
        confusion_matrix,
        perplexity,
        plot_confusion,
        plot_losses,
    )
    from ..training.trainer import CompleteCheckpointCallback, GPTForgeTrainer

    if options.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {options.task!r}")
    out = Path(options.output_dir)
    source = (
        sources.describe_source(options.data)
        if options.data is not None
        else ("the standard-library package task" if options.task == "classify" else "the standard-library corpus")
    )
    folder = resolve_model_folder(options.model, out)
    tokenizer = load_tokenizer(folder)
    base_config = AutoConfig.from_pretrained(folder)
    length = (
        options.max_length
        if options.task == "classify"
        else (options.block_size or min(256, base_config.max_position_embeddings))
    )
    check_block_size(length, base_config, name="max_length" if options.task == "classify" else "block_size")
    learning_rate = options.learning_rate
    if learning_rate is None:
        learning_rate = 1e-3 if options.lora else 3e-4

    args = training_arguments(
        out / CHECKPOINTS_DIR,
        options,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        eval_strategy="epoch",
        save_strategy="epoch",
        prediction_loss_only=options.task != "classify",
        # ddp_find_unused_parameters stays Trainer's default (search unless gradient checkpointing): unlike
        # pretraining, a LoRA-wrapped or partly frozen model can leave parameters out of a step's graph.
    )
    # Under torchrun, the main process reads and tokenises first; the others then hit the `datasets` cache.
    with args.main_process_first(desc="data"):
        # --- data ---
        if options.task == "classify":
            if options.data is None:
                raw = corpus.stdlib_classification(
                    num_classes=options.num_classes,
                    validation_split=options.validation_split,
                    max_files=options.max_files,
                    cache_dir=options.cache_dir,
                )
                held_out = None
            else:
                loaded = sources.load_data(
                    options.data,
                    text_column=options.text_column,
                    label_column=options.label_column,
                    **options.source_kwargs(options.seed),
                )
                raw, held_out = loaded.dataset, loaded.held_out
            label_names = encoding.label_names_of(raw, options.label_column, source)
            encoded = encoding.encode_for_classification(
                raw,
                tokenizer,
                label_names,
                length,
                options.text_column,
                options.label_column,
                num_proc=options.num_proc,
            )
        else:
            loaded = sources.load_data(
                options.data, text_column=options.text_column, **options.source_kwargs(options.seed)
            )
            raw, held_out = loaded.dataset, loaded.held_out
            label_names = []
            encoded = encoding.pack_for_causal_lm(
                raw, tokenizer, length, options.text_column, num_proc=options.num_proc, source=source
            )
            encoding.start_documents_with_bos(tokenizer)  # packed as pretraining packs: the folder says so too
    train_set = encoding.subsample(encoded["train"], options.max_train_samples, options.seed)
    eval_set = encoding.subsample(encoded["validation"], options.max_eval_samples, options.seed)

    # --- model ---
    set_seed(options.seed)
    if options.task == "classify":
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
        collator = encoding.causal_lm_collator
    if options.lora:
        net = apply_lora(
            net, options.task, options.lora_r, options.lora_alpha, options.lora_dropout, options.lora_target_modules
        )

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
        compute_metrics=compute_metrics if options.task == "classify" else None,
        callbacks=[
            MetricsCallback(out / METRICS_FILE, tokens_per_example=length if options.task != "classify" else None),
            EpochReport(),
            CompleteCheckpointCallback(keep=1),
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    if held_out:
        print(held_out)
    print(
        f"fine-tuning ({options.task}{', LoRA' if options.lora else ''}) {folder} on {len(train_set)} examples, "
        f"{len(eval_set)} for validation, from {source}" + (f"; {len(label_names)} classes" if label_names else "")
    )
    trainer.train()

    # --- final evaluation, figures, artefacts ---
    results: dict[str, Any] = {
        "output_dir": str(out),
        "final_dir": str(out / FINAL_DIR),
        "task": options.task,
        "lora": options.lora,
        "held_out": held_out,
    }
    if options.task == "classify":
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
            out / CONFUSION_PLOT,
            title=f"validation: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}",
        )
    else:
        metrics = trainer.evaluate()
        results.update(eval_loss=metrics["eval_loss"], eval_perplexity=perplexity(metrics["eval_loss"]))
    plot_losses(out / METRICS_FILE, out / LOSS_PLOT, title=f"fine-tuning ({options.task})")

    final_dir = out / FINAL_DIR
    if options.lora:
        trainer.model.save_pretrained(out / ADAPTER_DIR)
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(final_dir)
        results["adapter_dir"] = str(out / ADAPTER_DIR)
    else:
        trainer.model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    # the figures a model card quotes (`gptforge push`); `base_model` only when it names a Hub repo, not a local path
    published = {k: v for k, v in results.items() if k not in ("output_dir", "final_dir", "adapter_dir")}
    if not Path(folder).exists():
        published["base_model"] = str(folder)
    (final_dir / TRAINING_SUMMARY_FILE).write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")

    if options.task == "classify":
        print(
            f"validation accuracy {results['accuracy']:.4f} (majority-class baseline {results['majority_baseline']:.4f}, "
            f"always '{results['majority_class']}'), macro-F1 {results['macro_f1']:.4f}; model in {final_dir}"
        )
    else:
        print(
            f"validation loss {results['eval_loss']:.4f} (perplexity {results['eval_perplexity']:.2f}); model in {final_dir}"
        )
    return results
