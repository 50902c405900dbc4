"""One factory for the `TrainingArguments` of pretrain and finetune, and the device choices they share."""

import os
import warnings
from typing import Any

import torch
from transformers import TrainingArguments

from ..liger import register_liger_kernel
from .options import TrainerOptions


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


def training_arguments(output_dir: str | os.PathLike, options: TrainerOptions, **settings: Any) -> TrainingArguments:
    """`TrainingArguments` from the shared options; `settings` are what the command decides itself (schedule,
    evaluation and save strategy, ...) and win over the shared values."""
    gradient_checkpointing = options.gradient_checkpointing
    shared: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        learning_rate=options.learning_rate,
        weight_decay=options.weight_decay,
        warmup_steps=options.warmup_steps,
        max_grad_norm=options.max_grad_norm,
        max_steps=options.max_steps if options.max_steps is not None else -1,
        num_train_epochs=options.epochs,
        save_total_limit=None,  # CompleteCheckpointCallback rotates, after a checkpoint is marked complete
        logging_strategy="steps",
        logging_steps=options.logging_steps,
        logging_first_step=True,
        # Transformers' NaN/Inf filter reads the loss on the host twice a step (two stalls on a GPU); the training
        # commands' `GPTForgeTrainer` already stops on a non-finite loss (one read), so the filter never acts.
        logging_nan_inf_filter=False,
        bf16=use_bf16(options.precision),
        activation_checkpointing=gradient_checkpointing,  # Transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        report_to=report_to_list(options.report_to),
        seed=options.seed,
        disable_tqdm=not options.progress,
        remove_unused_columns=False,
        use_cpu=cpu_only(),  # a CPU-only torchrun launch then runs DDP over gloo
        dataloader_pin_memory=not cpu_only(),
    )
    merged = {**shared, **settings}
    if merged.get("use_liger_kernel") and not register_liger_kernel():
        # Transformers would raise at Trainer construction; the run goes on with gptforge's own kernels instead
        warnings.warn(
            "use_liger_kernel=True, but liger_kernel cannot be imported (pip install 'gptforge[gpu]', on a machine "
            "with a GPU); training without Liger's kernels",
            stacklevel=2,
        )
        merged["use_liger_kernel"] = False
    return TrainingArguments(**merged)
