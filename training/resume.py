"""What `--resume` and `--overwrite` mean for a run folder, and what a resumed run keeps of its checkpoint.

A run folder holds one run. Without either flag, a folder that already holds one (checkpoints, `final/`,
`metrics.jsonl`) is refused, so a typo in `--out` never overwrites a week of training. `--overwrite` deletes that run
and starts over; `--resume` continues from the newest complete, verified checkpoint, with that checkpoint's own config
and tokenizer. Flags that would change the model are then an error (`conflicts_on_resume`), flags it merely does not
use a warning (`ignored_on_resume`): the run continues as it was saved. So does its recipe (`recorded_recipe`,
training/recipes.py): a resumed run trains with the values recorded when it started, and another `--recipe` is an
error.
"""

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..configuration import PRESETS, GPTForgeConfig
from ..run_files import FINAL_DIR, LOSS_PLOT, METRICS_FILE, RECIPE_FILE, TOKENIZER_DIR
from .checkpointing import find_latest_checkpoint, list_checkpoints
from .distributed import check_resume_world_size, sharded_fsdp_launch
from .errors import UsageError
from .options import flag_of
from .resharding import check_resumable

# the flags whose value a resumed run does not use: the checkpoint's own config and tokenizer win
IGNORED_ON_RESUME = ("overwrite", "preset", "config", "overrides", "tokenizer", "tokenizer_vocab_size")
# config fields a tokenizer decides (`apply_tokenizer`), not the preset or the config file
TOKENIZER_FIELDS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


class ModelFlags(Protocol):
    """The options of a run that choose its model: a dataclass of flags (pretrain's) with these fields."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    preset: str | None
    config: str | None
    tokenizer: str | None


def prepare_run_folder(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (None: a new run), once `out` has been checked against the flags.

    `UsageError` when `out` holds a run and neither flag was given, or `resume` finds no complete checkpoint;
    `overwrite` (without `resume`) deletes the run's checkpoints, final model, tokenizer, metrics and plot.
    """
    final_dir, metrics_path = out / FINAL_DIR, out / METRICS_FILE
    existing = list_checkpoints(out)
    run_files = [p.name for p in (*(folder for _, folder in existing), final_dir, metrics_path) if p.exists()]
    if run_files and not resume:
        if not overwrite:
            raise UsageError(
                f"{str(out)!r} already holds a run ({', '.join(run_files)}); pass --resume to continue from its "
                "latest checkpoint, --overwrite to start over, or another --out"
            )
        # ignore_errors / missing_ok: under torchrun every process runs this at once
        for folder in [folder for _, folder in existing] + list(out.glob(".resume-checkpoint-*")):
            shutil.rmtree(folder, ignore_errors=True)
        for stale in (final_dir, out / TOKENIZER_DIR, metrics_path, out / LOSS_PLOT, out / RECIPE_FILE):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    # any number of processes may have written it: the checkpoint's own RNG files are what must be complete
    resume_from = find_latest_checkpoint(out) if resume else None
    if resume and resume_from is None:
        found = f"only unfinished saves ({', '.join(f.name for _, f in existing)})" if existing else "none"
        raise UsageError(
            f"--resume: no complete checkpoint in {str(out)!r} (found: {found}); drop --resume to start a new run"
        )
    return resume_from


def recorded_recipe(out: Path) -> dict[str, Any] | None:
    """The recipe record a run folder was started with (`RECIPE_FILE`); None for a run from before recipes."""
    path = out / RECIPE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_resume_launch(checkpoint: Path, world_size: int) -> str | None:
    """A note when `checkpoint` was written by another number of processes (None when the same); `UsageError` when
    this launch cannot read it (see `resharding.check_resumable`)."""
    note = check_resume_world_size(checkpoint, world_size)
    check_resumable(checkpoint, sharded_fsdp_launch())
    return note


def resumed_config(
    checkpoint: Path, options: ModelFlags, overrides: dict[str, Any]
) -> tuple[GPTForgeConfig, list[str]]:
    """The config a resumed run continues with (the checkpoint's), and the flags given that it ignores.

    `UsageError` naming each flag that contradicts the checkpoint (`conflicts_on_resume`).
    """
    saved = GPTForgeConfig.from_pretrained(checkpoint)
    if conflicts := conflicts_on_resume(options, overrides, saved, checkpoint):
        raise UsageError(
            f"--resume continues {checkpoint.name}, which these flags contradict: {'; '.join(conflicts)}; "
            "drop them to resume, or pass --overwrite without --resume to start over"
        )
    return saved, ignored_on_resume(options)


def ignored_on_resume(options: ModelFlags) -> list[str]:
    """The flags given (not left at their default) that `--resume` from a checkpoint does not use."""
    fields = {field.name: field for field in dataclasses.fields(options)}
    ignored = []
    for name in IGNORED_ON_RESUME:
        field = fields[name]
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if getattr(options, name) not in (default, [], {}):
            ignored.append(flag_of(type(options), name))
    return ignored


def conflicts_on_resume(options: ModelFlags, overrides: dict[str, Any], saved: Any, checkpoint: Path) -> list[str]:
    """Each model flag whose value differs from the checkpoint's, with the fields that differ."""

    def differ(values: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
        """`field (saved in the checkpoint, asked)` for each scalar field whose value differs."""
        found = []
        for key, value in values.items():
            held = getattr(saved, key, None)
            scalar = (str, int, float, bool, type(None))
            if key not in skip and isinstance(value, scalar) and isinstance(held, scalar) and held != value:
                found.append(f"{key}: {held!r} in the checkpoint, {value!r} asked")
        return found

    conflicts = []
    if options.preset is not None and (fields := differ(PRESETS[options.preset], TOKENIZER_FIELDS)):
        conflicts.append(f"--preset {options.preset} ({', '.join(fields)})")
    if options.config is not None:
        path = Path(options.config)
        values = json.loads((path / "config.json" if path.is_dir() else path).read_text(encoding="utf-8"))
        if fields := differ(values, (*TOKENIZER_FIELDS, "transformers_version", "dtype", "torch_dtype")):
            conflicts.append(f"--config {options.config} ({', '.join(fields)})")
    conflicts += [f"--set {field}" for field in differ(overrides)]
    if options.tokenizer is not None:
        given, kept = Path(options.tokenizer) / "tokenizer.json", checkpoint / "tokenizer.json"
        if given.is_file() and kept.is_file() and vocabulary(given) != vocabulary(kept):
            conflicts.append(f"--tokenizer {options.tokenizer} (another vocabulary than the checkpoint's tokenizer)")
    return conflicts


def vocabulary(tokenizer_json: Path) -> tuple[Any, Any]:
    """What makes two tokenizers the same for a model: the vocabulary with its merges, and the added tokens. A
    re-saved tokenizer.json differs in bytes (padding, empty prefixes written as "" instead of null) without
    changing a single id."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = data.get("model", {})
    added = sorted((t["id"], t["content"]) for t in data.get("added_tokens", []))
    return (
        model.get("vocab"),
        [list(m) if isinstance(m, list) else m.split(" ") for m in model.get("merges", [])],
    ), added
