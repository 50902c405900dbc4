"""Saving folders so that a crash never leaves a half-written or mixed one.

Transformers writes a model folder file by file, in place: a save killed halfway over an existing folder leaves new
shards beside old ones, and the folder may even load. gptforge stages every save in a hidden sibling folder, fsyncs
it, and swaps it in with renames, so the target name always holds a complete folder (the old one or the new one).
Files in the target that the new save does not write (a tokenizer saved earlier, a README, metrics) are carried over;
sub-folders stay where they are. Files get the permissions a normal file would (safetensors 0.8 creates 0600 ones).

`atomic_folder` is also what the training scripts use to make checkpoints appear atomically.
"""

import contextlib
import contextvars
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Folders being staged by this process: saves nested inside one (a model saving its config) write directly.
_STAGING: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("gptforge_staging", default=())

# Weight files: when a save writes weights, no old weight file is carried over (that would mix old shards in).
_WEIGHT_PREFIXES = ("model.safetensors", "model-", "pytorch_model", "adapter_model")


def _is_weights(name: str) -> bool:
    return name.startswith(_WEIGHT_PREFIXES)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's data to disk (a folder's: its entries, so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _carry_over(old: Path, new: Path) -> list[Path]:
    """Hard-link (or copy) into `new` the old files the new save did not write; return old sub-folders to move."""
    folders = []
    new_weights = any(_is_weights(path.name) for path in new.iterdir())
    for entry in old.iterdir():
        target = new / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if not target.exists():
                folders.append(entry)
        elif not target.exists() and not (new_weights and _is_weights(entry.name)):
            try:
                os.link(entry, target)
            except OSError:
                shutil.copy2(entry, target)
    return folders


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, carry_over: bool = True) -> Iterator[Path]:
    """Yield a staging folder; when the block ends without error, it replaces `target` as a whole.

    The swap is two renames (old aside, new in); between them a crash leaves the old folder complete under
    `.<name>.old-*` beside the target, never a mix. On an error the staging folder is removed and `target` is
    untouched.
    """
    target = Path(target).absolute()
    if any(target == root or root in target.parents for root in _STAGING.get()):
        target.mkdir(parents=True, exist_ok=True)
        yield target
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    token = _STAGING.set((*_STAGING.get(), staging))
    try:
        yield staging
        umask = _umask()  # mkdtemp makes 0700 folders and safetensors 0600 files: give what a plain save would
        for path in [staging, *staging.rglob("*")]:
            if path.is_symlink():
                continue
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
            fsync_path(path)
        old = None
        if target.exists():
            folders = _carry_over(target, staging) if carry_over else []
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            target.rename(old)
        staging.rename(target)
        fsync_path(target.parent)
        if old is not None:
            if carry_over:
                for folder in folders:
                    (old / folder.name).rename(target / folder.name)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _STAGING.reset(token)


def save_atomically(parent_save: Callable[..., Any], save_directory: str | os.PathLike, **kwargs: Any) -> Any:
    """Run a `save_pretrained` into a staging folder and swap the result in (see `atomic_folder`)."""
    with atomic_folder(save_directory) as staging:
        return parent_save(staging, **kwargs)
