"""The Trainer the training commands run: complete checkpoints, FSDP2 on CPU processes, a stop on a non-finite loss.

- `CompleteCheckpointCallback`: once `Trainer` has written a checkpoint, it records the optimizer's parameter names
  (`resharding.record_parameter_names`) and writes the completion marker (`checkpointing.mark_complete`). Rotation
  (`save_total_limit`) happens here too, after the marker, so a complete checkpoint is never deleted before the next
  one is complete.
- `GPTForgeTrainer.create_scheduler` reads a warmup-stable-decay cooldown given as a fraction of the steps.
- `GPTForgeTrainer.training_step` stops the run on a NaN or infinite loss, before the optimizer step, naming the step
  and the last good checkpoint (Trainer's logging would average it away or print it as a number).
"""

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, get_scheduler

from .checkpointing import complete_checkpoints, mark_complete
from .distributed import enable_fsdp_on_cpu, is_sharded_fsdp, save_checkpoint_metadata, save_full_model
from .resharding import record_parameter_names


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped before applying it."""


class CompleteCheckpointCallback(TrainerCallback):
    """Mark each checkpoint complete once Trainer has written it, then rotate (keep the newest `keep` complete).

    Pass `save_total_limit=None` to `TrainingArguments` and the limit here instead: Trainer's own rotation runs
    before the marker exists and could delete the last complete checkpoint while the newest is still unmarked.
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every process has written its RNG state
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if kwargs.get("model") is not None and kwargs.get("optimizer") is not None:
                # lets another engine read the optimizer state
                record_parameter_names(kwargs["model"], kwargs["optimizer"], folder)
            mark_complete(folder)
            complete = complete_checkpoints(args.output_dir)
            if self.keep is not None and len(complete) > self.keep:
                for folder in complete[: len(complete) - self.keep]:
                    shutil.rmtree(folder, ignore_errors=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return control


class GPTForgeTrainer(Trainer):
    """`Trainer` that refuses to train on a non-finite loss (see `NonFiniteLossError`), and runs FSDP2 on CPU
    processes when FSDP is asked for (`distributed.enable_fsdp_on_cpu`), with sharded checkpoints that carry their
    config and a final save that gathers the full weights (`distributed.save_full_model`)."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        enable_fsdp_on_cpu(self)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not is_sharded_fsdp(self):
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if _internal_call:  # a checkpoint: the shards follow (Trainer's optimizer save); add what resume reads
            save_checkpoint_metadata(self, output_dir)
        else:  # a model folder: the full weights, loadable in one process
            save_full_model(self, output_dir)

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """Trainer's scheduler, where warmup-stable-decay's `num_decay_steps` may be a fraction of the steps (as
        `warmup_steps` may): pretrain's `--decay-fraction` holds for any number of steps or epochs."""
        kwargs = self.args.lr_scheduler_kwargs or {}
        decay = kwargs.get("num_decay_steps")
        if getattr(self, "lr_scheduler", None) is None and isinstance(decay, float) and 0 < decay <= 1:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=optimizer if optimizer is not None else self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs={**kwargs, "num_decay_steps": max(1, round(decay * num_training_steps))},
            )
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # one host sync per micro-batch: negligible next to a training step, and it stops the run before the
        # optimizer applies NaN gradients to the weights
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            complete = complete_checkpoints(self.args.output_dir) if self.args.output_dir else []
            latest = complete[-1] if complete else None
            where = f"last good checkpoint: {latest}" if latest else "no checkpoint was saved yet"
            raise NonFiniteLossError(
                f"the training loss is {loss.detach().float().mean().item()} at step {step}; stopped before the "
                f"optimizer step, so the weights are unharmed ({where}). Resume with --resume, perhaps with a lower "
                "learning rate or a smaller max_grad_norm."
            )
        return loss
