"""Checkpoints that survive crashes: the completion marker, and finding and verifying complete checkpoints.

Transformers' `Trainer` writes `checkpoint-N/` file by file. A save killed halfway leaves a folder that
`resume_from_checkpoint=True` picks and then crashes on, and a checkpoint without its optimizer, scheduler or RNG
state resumes silently with fresh state. gptforge closes both holes:

- `mark_complete`: once a checkpoint has been written, every file is fsynced and then a marker,
  `checkpoint_complete.json` (the files and their sizes), is written to a temporary name, fsynced and renamed. A
  checkpoint counts only with its marker, so one cut short is never chosen. `trainer.CompleteCheckpointCallback`
  calls it after each of Trainer's saves and rotates only afterwards.
- `find_latest_checkpoint` returns the newest checkpoint with a marker, skipping unfinished ones; `verify_checkpoint`
  raises `CheckpointError` when that checkpoint lacks the weights, optimizer, scheduler, RNG or trainer state, or a
  file's size differs from the marker's: resuming with fresh state would be silent data loss.

This module reads and writes files only (no torch, no Transformers): `distributed`, `resharding` and `trainer` build
on it.
"""

import json
import os
import re
import shutil
from pathlib import Path

from ..storage import fsync_path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
MARKER = "checkpoint_complete.json"
# What a checkpoint needs to resume exactly (besides the weights and one RNG file per process).
REQUIRED_STATE = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


class CheckpointError(ValueError):
    """A checkpoint that claims to be complete cannot be resumed from exactly."""


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-N` folder in `output_dir`, complete or not, by step."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether the checkpoint's save finished (its marker exists); `verify_checkpoint` checks the contents."""
    return (Path(folder) / MARKER).is_file()


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint folders whose save finished (marker present), oldest first; contents not yet verified."""
    return [folder for _, folder in list_checkpoints(output_dir) if is_complete_checkpoint(folder)]


def mark_complete(folder: str | os.PathLike) -> Path:
    """Fsync every file of `folder`, then write its marker atomically (temporary name, fsync, rename)."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MARKER and not path.name.startswith(f".{MARKER}"):
            fsync_path(path)
            files[str(path.relative_to(folder))] = path.stat().st_size
    temporary = folder / f".{MARKER}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"files": files}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, folder / MARKER)
    fsync_path(folder)
    return folder / MARKER


def recorded_files(folder: str | os.PathLike) -> dict[str, int]:
    """The files (relative paths) and sizes a checkpoint's marker records; `CheckpointError` if it is unreadable."""
    marker = Path(folder) / MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{marker}: unreadable completion marker ({exc})") from exc


def verify_checkpoint(folder: str | os.PathLike, world_size: int | None = None) -> None:
    """Raise `CheckpointError` unless `folder` holds, at the sizes its marker records, everything an exact resume
    needs: weights, optimizer, scheduler, trainer state and the RNG state of each of `world_size` processes (None:
    whatever number of processes saved it, at least one)."""
    folder = Path(folder)
    recorded = recorded_files(folder)
    if world_size is None:
        saved = sorted(name for name in recorded if re.fullmatch(r"rng_state(_\d+)?\.pth", name))
        rng = tuple(saved) or ("rng_state.pth",)
    else:
        rng = ("rng_state.pth",) if world_size <= 1 else tuple(f"rng_state_{i}.pth" for i in range(world_size))
    # FSDP's sharded checkpoints hold weights and optimizer as distributed-checkpoint folders, one shard per process
    sharded = sharded_state_present(recorded)
    required = [name for name in REQUIRED_STATE if not (name == "optimizer.pt" and sharded["optimizer"])]
    missing = [name for name in (*required, *rng) if name not in recorded]
    if not sharded["model"] and not any(name in recorded for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise CheckpointError(
            f"{folder} is missing {', '.join(missing)}: resuming would restart that state from scratch; "
            "resume from an earlier checkpoint or start over with --overwrite"
        )
    for name, size in recorded.items():
        path = folder / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            state = "is missing" if actual is None else f"has {actual} bytes, not the {size} written"
            raise CheckpointError(f"{path} {state}: the checkpoint was damaged after it was saved")


def sharded_state_present(recorded: dict[str, int]) -> dict[str, bool]:
    """Which parts of a checkpoint are FSDP distributed checkpoints (`pytorch_model_fsdp_0/`, `optimizer_0/`)."""
    return {
        "model": any(re.match(r"pytorch_model_fsdp_\d+/.+\.distcp$", name) for name in recorded),
        "optimizer": any(re.match(r"optimizer_\d+/.+\.distcp$", name) for name in recorded),
    }


def find_latest_checkpoint(output_dir: str | os.PathLike, world_size: int | None = None) -> Path | None:
    """The newest complete checkpoint in `output_dir` (verified), or None when there is none.

    Checkpoints whose save never finished (no marker: a crash, `kill -9`, a full disk) are skipped. The newest
    complete one must verify: a damaged one raises `CheckpointError` rather than falling back silently.
    """
    complete = complete_checkpoints(output_dir)
    if not complete:
        return None
    verify_checkpoint(complete[-1], world_size)
    return complete[-1]


def remove_unfinished(output_dir: str | os.PathLike) -> list[Path]:
    """Delete checkpoint folders without a marker, and staging folders left by interrupted saves."""
    root = Path(output_dir)
    removed = [folder for _, folder in list_checkpoints(root) if not is_complete_checkpoint(folder)]
    if root.is_dir():
        removed += [p for p in root.iterdir() if p.is_dir() and re.match(r"^\..+\.(saving|old)-", p.name)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed
