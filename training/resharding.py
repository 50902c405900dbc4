"""Resume a checkpoint under another engine or number of processes: FSDP's sharded checkpoints and full ones.

With `SHARDED_STATE_DICT`, FSDP writes a checkpoint's weights and optimizer as distributed checkpoints
(`pytorch_model_fsdp_0/`, `optimizer_0/`: one shard file per process, tensors keyed by parameter name); one process
or DDP writes `model.safetensors` and `optimizer.pt` (optimizer state keyed by parameter position). Distributed
checkpoints reshard on load, so FSDP on any number of processes reads its own; what no engine reads is the other
layout. `resume_folder` rewrites a checkpoint into the layout the launch reads, in a hidden sibling folder of the
run (`OUT/.resume-checkpoint-N/`, completion marker included), and leaves the original untouched:

- sharded -> full (FSDP checkpoint, resumed in one process or under DDP): the shards are gathered into full tensors;
  the optimizer state's names become positions, in the order of the optimizer's parameter groups;
- full -> sharded (one-process or DDP checkpoint, resumed under FSDP): the full tensors are written as a distributed
  checkpoint that FSDP reshards on load; positions become names through `optimizer_parameters.json`, which every
  checkpoint carries (`record_parameter_names`, called when a checkpoint is saved).

Weights, optimizer moments and step counts are copied exactly; the scheduler, trainer state and data position are
files every layout shares. Per-process random streams (dropout) do not carry over between world sizes.
"""

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .checkpointing import MARKER, mark_complete
from .distributed import is_sharded_checkpoint
from .errors import UsageError

MODEL_SHARDS = "pytorch_model_fsdp_0"
OPTIMIZER_SHARDS = "optimizer_0"
PARAMETER_NAMES = "optimizer_parameters.json"


def record_parameter_names(model: torch.nn.Module, optimizer: Any, folder: str | os.PathLike) -> None:
    """Write the name of each parameter the optimizer holds, group by group, in the optimizer's own order.

    `optimizer.pt` keys its state by position; the names let the state be matched to parameters by name, as a
    distributed checkpoint needs.
    """
    from accelerate.utils import extract_model_from_parallel

    unwrapped = extract_model_from_parallel(model, keep_torch_compile=False)  # the eager names, not DDP's "module."
    names = {id(parameter): name for name, parameter in unwrapped.named_parameters()}
    groups = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    Path(folder, PARAMETER_NAMES).write_text(json.dumps({"param_groups": groups}, indent=1) + "\n", encoding="utf-8")


def check_resumable(checkpoint: Path, sharded_launch: bool) -> None:
    """`UsageError` when `resume_folder` could not rewrite the checkpoint for this launch; every process calls it
    before the main one rewrites, so all stop together."""
    if sharded_launch and not is_sharded_checkpoint(checkpoint) and not (checkpoint / PARAMETER_NAMES).is_file():
        raise UsageError(
            f"{checkpoint} has no {PARAMETER_NAMES} (it was saved by an older gptforge), so its optimizer state "
            "cannot be matched to parameter names for FSDP; resume it with the engine that wrote it"
        )


def _identity(checkpoint: Path) -> dict[str, str]:
    # the marker's bytes and time: a checkpoint of the same name written anew (after --overwrite) is another one
    marker = checkpoint / MARKER
    digest = hashlib.sha256(marker.read_bytes()).hexdigest()
    return {"checkpoint": str(checkpoint.resolve()), "marker": f"{digest}:{marker.stat().st_mtime_ns}"}


def resume_folder(checkpoint: Path, sharded_launch: bool, output_dir: Path) -> tuple[Path, str | None]:
    """The folder this launch resumes from, and a note when it was rewritten (None: the checkpoint itself).

    Call it in the main process first (`TrainingArguments.main_process_first(local=False)`); the others then find
    the folder it wrote, complete with its marker.
    """
    if is_sharded_checkpoint(checkpoint) == sharded_launch:
        return checkpoint, None
    check_resumable(checkpoint, sharded_launch)
    target = output_dir / f".resume-{checkpoint.name}"
    layout = "sharded (FSDP)" if sharded_launch else "full"
    note = f"{checkpoint.name} was rewritten as a {layout} checkpoint in {target.name} to resume under this launch"
    source = target / "source.json"
    if (target / MARKER).is_file() and source.is_file() and json.loads(source.read_text()) == _identity(checkpoint):
        return target, note
    staging = output_dir / f".resume-{checkpoint.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (full_to_sharded if sharded_launch else sharded_to_full)(checkpoint, staging)
        (staging / "source.json").write_text(json.dumps(_identity(checkpoint)) + "\n")
        mark_complete(staging)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, note


@contextmanager
def _in_this_process() -> Iterator[None]:
    """Distributed checkpoints read and written by this one process (`no_dist`), which is what the conversion
    means: torch warns on every such call, even when asked for it, and the warning would reach the run's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable or uninitialized")
        yield


def _copy_shared_files(source: Path, target: Path) -> None:
    """Everything but the weights, the optimizer and the marker: trainer state, scheduler, RNG, config, tokenizer."""
    skip = {MODEL_SHARDS, OPTIMIZER_SHARDS, "model.safetensors", "optimizer.pt", MARKER}
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.name not in skip and path.is_file():
            shutil.copy2(path, target / path.name)


def sharded_to_full(source: Path, target: Path) -> None:
    """A sharded FSDP checkpoint as `model.safetensors` + `optimizer.pt` (state keyed by position)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    _copy_shared_files(source, target)
    gathered = {}
    for name, key in ((MODEL_SHARDS, "model"), (OPTIMIZER_SHARDS, "optimizer")):
        scratch = target / f".{name}.pt"
        with _in_this_process():
            dcp_to_torch_save(source / name, scratch)
        gathered[key] = torch.load(scratch, weights_only=True)[key]
        scratch.unlink()
    # clone: tied weights come back as one tensor under two names, which safetensors refuses to write
    weights = {name: tensor.contiguous().clone() for name, tensor in gathered["model"].items()}
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    by_name = gathered["optimizer"]
    order = [name for group in by_name["param_groups"] for name in group["params"]]
    position = {name: i for i, name in enumerate(order)}
    state = {position[name]: value for name, value in by_name["state"].items()}
    groups = [{**group, "params": [position[n] for n in group["params"]]} for group in by_name["param_groups"]]
    torch.save({"state": state, "param_groups": groups}, target / "optimizer.pt")


def full_to_sharded(source: Path, target: Path) -> None:
    """A full checkpoint as the distributed checkpoints FSDP reads (`pytorch_model_fsdp_0/`, `optimizer_0/`)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    from ..configuration import GPTForgeConfig
    from ..modeling import GPTForgeForCausalLM

    groups = json.loads((source / PARAMETER_NAMES).read_text(encoding="utf-8"))["param_groups"]
    _copy_shared_files(source, target)
    weights = load_file(str(source / "model.safetensors"))
    if GPTForgeConfig.from_pretrained(source).tie_word_embeddings:
        # FSDP's state dict names a tied weight under both its names; the file keeps one
        for tied, origin in GPTForgeForCausalLM._tied_weights_keys.items():
            weights.setdefault(tied, weights[origin])
    with _in_this_process():
        dcp.save({"model": weights}, storage_writer=dcp.FileSystemWriter(str(target / MODEL_SHARDS)), no_dist=True)
    by_position = torch.load(source / "optimizer.pt", weights_only=True)
    order = [name for group in groups for name in group]
    state = {order[position]: value for position, value in by_position["state"].items()}
    named_groups = [
        {**group, "params": names} for group, names in zip(by_position["param_groups"], groups, strict=True)
    ]
    with _in_this_process():
        dcp.save(
            {"optimizer": {"state": state, "param_groups": named_groups}},
            storage_writer=dcp.FileSystemWriter(str(target / OPTIMIZER_SHARDS)),
            no_dist=True,
        )
