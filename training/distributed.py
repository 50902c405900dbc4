"""Several processes: the launch checks, FSDP2 on CPU processes, sharded checkpoints and world-size changes.

- `check_launch`: `accelerate launch --cpu --num_processes N` starts ONE process (accelerate's simple launcher
  ignores `--num_processes` without `--mpirun_hostfile`), so a run meant for N processes silently trains on 1/N of
  the global batch. The launch leaves a trace (`ACCELERATE_USE_CPU`, `MASTER_ADDR`, no `WORLD_SIZE`), and this
  turns it into an error that says what to run instead.
- `enable_fsdp_on_cpu`: accelerate turns an FSDP request into plain multi-CPU data parallelism (its state only takes
  FSDP on accelerators), although FSDP2 (`fully_shard`) runs on CPU processes over gloo. When FSDP is asked for
  (an accelerate FSDP config, or `TrainingArguments(fsdp=..., fsdp_config=...)`) on several CPU processes, the
  Trainer's accelerator is switched to FSDP with that plugin, so `Accelerator.prepare` shards the model with
  `fully_shard`, one unit per `_no_split_modules` block.
- `is_sharded_fsdp` / `save_full_model` / `save_checkpoint_metadata`: with `SHARDED_STATE_DICT`, Trainer writes a
  checkpoint's weights and optimizer as distributed checkpoints (`pytorch_model_fsdp_0/`, `optimizer_0/`, one file
  per process) and its `save_model` writes nothing; the config and tokenizer are added so `--resume` can rebuild the
  model, and a final save gathers the full state dict into a plain `save_pretrained` folder.
- `saved_world_size`: how many processes wrote a checkpoint (one RNG file each), so a resume with another number
  of processes is reported; `sharded_fsdp_launch` says which checkpoint layout this launch reads (a checkpoint in
  the other layout is rewritten by `resharding.resume_folder`).
"""

import os
import re
from pathlib import Path
from typing import Any

import torch

from .checkpointing import recorded_files, sharded_state_present

# `MPI_LOCALNRANKS` etc.: an mpirun launch (accelerate --mpirun_hostfile) sets these instead of WORLD_SIZE
_MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def check_launch() -> None:
    """`RuntimeError` when `accelerate launch --cpu` was asked for several processes but started one.

    accelerate's simple launcher (taken whenever `--cpu` is given) sets `MASTER_ADDR`/`MASTER_PORT` for
    `--num_processes` > 1 but then runs a single Python process without `WORLD_SIZE`; every other launcher (torchrun,
    accelerate without `--cpu`, mpirun) sets the world size.
    """
    env = os.environ
    if (
        _flag("ACCELERATE_USE_CPU")
        and "MASTER_ADDR" in env
        and "WORLD_SIZE" not in env
        and not any(name in env for name in _MPI_SIZE_VARIABLES)
    ):
        raise RuntimeError(
            "accelerate launch --cpu started a single process although several were asked for (--cpu makes "
            "accelerate use its one-process launcher unless --mpirun_hostfile is given), so this run would train on "
            "one process's share of the global batch. Drop --cpu: on a machine without accelerators "
            "`accelerate launch --num_processes N ...` (or `torchrun --nproc_per_node N ...`) runs N processes over "
            "gloo, and pretrain keeps them on the CPU."
        )


def fsdp_requested(args: Any) -> bool:
    """Whether FSDP was asked for: Trainer's own `fsdp` arguments, or an accelerate FSDP launch."""
    return getattr(args, "fsdp_plugin_args", None) is not None or _flag("ACCELERATE_USE_FSDP")


def enable_fsdp_on_cpu(trainer: Any) -> bool:
    """Switch a Trainer whose accelerator fell back to multi-CPU data parallelism to FSDP (see the module docstring).

    Call right after `Trainer.create_accelerator_and_postprocess`. Returns whether it switched. The plugin comes from
    `TrainingArguments.fsdp_plugin_args` or, under `accelerate launch`, from the `FSDP_*` environment the config set.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if (
        trainer.is_fsdp_enabled
        or state.distributed_type != DistributedType.MULTI_CPU
        or not fsdp_requested(trainer.args)
    ):
        return False
    plugin_args = trainer.args.fsdp_plugin_args
    plugin = FullyShardedDataParallelPlugin(**plugin_args) if plugin_args else FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"FSDP on CPU processes needs fsdp_version 2 (fully_shard); the configuration asks for {plugin.fsdp_version}"
        )
    # AcceleratorState keeps its fields in one shared dict, and every `AcceleratorState()` refreshes
    # `distributed_type` from PartialState's: both are set, as accelerate itself does for an FSDP launch on GPUs
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    return True


def is_sharded_fsdp(trainer: Any) -> bool:
    """FSDP with `SHARDED_STATE_DICT`: checkpoints are distributed checkpoints, one shard file per process."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return False
    return "SHARDED_STATE_DICT" in str(trainer.accelerator.state.fsdp_plugin.state_dict_type)


def save_full_model(trainer: Any, output_dir: str | os.PathLike) -> None:
    """Gather the full state dict from every process and write a plain `save_pretrained` folder (main process).

    Every process must call this: the gather is a collective.
    """
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.args.should_save:
        model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
        model.save_pretrained(output_dir, state_dict=state_dict)
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(output_dir)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint_metadata(trainer: Any, output_dir: str | os.PathLike) -> None:
    """The config (and tokenizer) next to a sharded checkpoint's shards: `--resume` rebuilds the model from them."""
    if not trainer.args.should_save:
        return
    model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(output_dir)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(output_dir)
    if trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(output_dir)


def saved_world_size(folder: str | os.PathLike) -> int:
    """How many processes wrote a complete checkpoint: `rng_state_<rank>.pth` files, or 1 (`rng_state.pth`)."""
    ranks = [name for name in recorded_files(folder) if re.fullmatch(r"rng_state_\d+\.pth", name)]
    return len(ranks) or 1


def is_sharded_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether a complete checkpoint holds FSDP distributed-checkpoint shards rather than full weights."""
    return sharded_state_present(recorded_files(folder))["model"]


def sharded_fsdp_launch() -> bool:
    """Whether this launch is FSDP with sharded checkpoints (what the shipped accelerate FSDP config asks for)."""
    return _flag("ACCELERATE_USE_FSDP") and "SHARDED" in os.environ.get("FSDP_STATE_DICT_TYPE", "").upper()


def check_resume_world_size(folder: str | os.PathLike, world_size: int) -> str | None:
    """A note when the checkpoint was written by another number of processes (None when the same).

    Weights, optimizer, scheduler and the data position carry over (`resharding.resume_folder` rewrites a sharded
    FSDP checkpoint for one process or DDP, and a full one for FSDP); each process's RNG stream (dropout) cannot,
    since there is one per process.
    """
    saved = saved_world_size(folder)
    if saved == world_size:
        return None
    return (
        f"{folder.name if isinstance(folder, Path) else folder} was written by {saved} process(es) and resumes in "
        f"{world_size}: weights, optimizer, schedule and data position carry over; per-process random streams "
        "(dropout) start afresh"
    )
