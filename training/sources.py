"""Where texts come from: a local file or folder, a Hugging Face Hub dataset id, or the embedded default.

Sources (`load_source`), in the order they are tried:
- nothing named: the standard-library corpus (`corpus.py`);
- a local file (.txt, .md, .json, .jsonl, .csv, .parquet, .arrow) or a folder of them (a path with the word
  "train", "validation"/"valid"/"val"/"dev"/"eval" or "test" goes to that split, the rest to train);
- otherwise a Hugging Face Hub dataset id (only when online).

Sources without a validation split get one carved from their training rows (`validation_split`, seeded).

    from gptforge.training.sources import load_source
    raw = load_source(None)                       # the standard library, train + validation
    raw = load_source("data/", text_column="body")
"""

import os
import re
from pathlib import Path
from typing import Any

import datasets

from .corpus import DEFAULT_VALIDATION_SPLIT, stdlib_corpus

# file extension -> `datasets` packaged builder
EXTENSION_BUILDERS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
# word in a data file's path (relative to the folder; words are split at anything but letters) -> its split, as
# `datasets` names splits: "train-00000-of-00002.parquet", "dev.jsonl", "validation/part1.csv"
SPLIT_WORDS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
    "testing": "test",
}


def _split_of(relative_path: str) -> str:
    """The split a file belongs to by the words of its path; "train" when none is a split name."""
    words = re.split(r"[^a-z]+", relative_path.lower())
    for word in reversed(words):  # the file name wins over the folders above it
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return "train"


def _local_data_files(path: Path) -> tuple[str, dict[str, list[str]]]:
    """(builder, {split: files}) for a local file or folder; `FileNotFoundError` / `ValueError` when unusable."""
    supported = ", ".join(f"*{ext}" for ext in EXTENSION_BUILDERS)
    if path.is_file():
        builder = EXTENSION_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"cannot read {str(path)!r}: unsupported file type {path.suffix!r}; supported: {supported}"
            )
        return builder, {"train": [str(path)]}
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSION_BUILDERS)
    if not found:
        present = sorted(p.name for p in path.iterdir())[:10]
        raise FileNotFoundError(
            f"no data files in folder {str(path)!r}: looked for {supported} (found: {', '.join(present) or 'nothing'})"
        )
    builders = {EXTENSION_BUILDERS[p.suffix.lower()] for p in found}
    if len(builders) > 1:
        raise ValueError(
            f"folder {str(path)!r} mixes file types read by different builders ({sorted(builders)}); "
            "keep one type per folder"
        )
    data_files: dict[str, list[str]] = {}
    for p in found:
        data_files.setdefault(_split_of(str(p.relative_to(path))), []).append(str(p))
    if "train" not in data_files:
        raise ValueError(
            f"folder {str(path)!r} has no training files: every file name matched a validation/test pattern "
            f"({sorted(data_files)})"
        )
    return builders.pop(), data_files


def _looks_like_hub_id(name: str) -> bool:
    # "name" or "org/name": no leading "./", "/" or "~", at most one slash, no file extension
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and not Path(name).suffix


def _offline() -> bool:
    return any(
        os.environ.get(var, "").lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def load_source(
    data: str | os.PathLike | None = None,
    *,
    data_config: str | None = None,
    validation_split: float = DEFAULT_VALIDATION_SPLIT,
    sample_by: str = "document",
    seed: int = 0,
    cache_dir: str | None = None,
    max_files: int | None = None,
) -> datasets.DatasetDict:
    """A `DatasetDict` with at least `train` and `validation`, from a path, a Hub id, or the default corpus.

    Args:
        data: local file or folder, Hub dataset id, or None for the standard-library corpus.
        data_config: the Hub dataset's configuration name (e.g. "wikitext-2-raw-v1").
        validation_split: fraction of training rows held out when the source has no validation split.
        sample_by: for text files, what one row is: "document" (a whole file), "paragraph" or "line".
        seed: seeds the held-out split.
        cache_dir: `datasets` cache (Arrow files and `map` results); None: the `datasets` default.
        max_files: default corpus only: keep this many files (smoke runs).
    """
    if data is None:
        return stdlib_corpus(validation_split=validation_split, max_files=max_files, cache_dir=cache_dir)
    name = os.fspath(data)
    path = Path(name).expanduser()
    if path.exists():
        builder, data_files = _local_data_files(path)
        kwargs: dict[str, Any] = {"sample_by": sample_by} if builder == "text" else {}
        loaded = datasets.load_dataset(builder, data_files=data_files, cache_dir=cache_dir, **kwargs)
    elif _looks_like_hub_id(name):
        if _offline():
            raise FileNotFoundError(
                f"no data at {name!r}: no local file or folder {str(path.resolve())!r}, and the Hub dataset "
                f"{name!r} cannot be fetched offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
            )
        try:
            loaded = datasets.load_dataset(name, data_config, cache_dir=cache_dir)
        except Exception as exc:  # the Hub raises many types; the user needs to know both places were tried
            raise FileNotFoundError(
                f"no data at {name!r}: no local file or folder {str(path.resolve())!r}, and loading the Hub "
                f"dataset {name!r} failed: {exc}"
            ) from exc
    else:
        raise FileNotFoundError(f"no data at {name!r}: looked for a local file or folder {str(path.resolve())!r}")
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({"train": loaded})
    return with_validation_split(loaded, validation_split=validation_split, seed=seed, source=name)


def with_validation_split(
    dataset: datasets.DatasetDict, validation_split: float, seed: int, source: str
) -> datasets.DatasetDict:
    """`train` + `validation`: renames `valid`/`dev`/`test` to validation, or carves one from `train` (seeded)."""
    if "train" not in dataset:
        raise ValueError(f"{source!r} has no train split; its splits are {sorted(dataset)}")
    if "validation" not in dataset:
        for alias in ("valid", "dev", "test"):
            if alias in dataset:
                return datasets.DatasetDict({"train": dataset["train"], "validation": dataset[alias]})
        rows = len(dataset["train"])
        if rows < 2:
            raise ValueError(
                f"{source!r} has {rows} training row(s) and no validation split, so none can be held out; "
                "add a validation file, or for text files read smaller rows (sample_by='paragraph' or 'line')"
            )
        held_out = min(rows - 1, max(1, round(rows * validation_split)))
        parts = dataset["train"].train_test_split(test_size=held_out, seed=seed)
        return datasets.DatasetDict({"train": parts["train"], "validation": parts["test"]})
    return datasets.DatasetDict({"train": dataset["train"], "validation": dataset["validation"]})


def load_texts(
    data: str | os.PathLike | None,
    text_column: str,
    *,
    label_column: str | None = None,
    **source_kwargs: Any,
) -> datasets.DatasetDict:
    """`load_source`, then the checks every subcommand needs before tokenising: the columns exist, and no split is
    empty once rows without text (or label) are dropped."""
    raw = load_source(data, **source_kwargs)
    source = describe_source(data)
    require_columns(raw, [text_column] + ([label_column] if label_column else []), source)
    return drop_empty(raw, text_column, source, label_column=label_column)


def require_columns(dataset: datasets.DatasetDict, columns: list[str], source: str) -> None:
    """`ValueError` naming the missing column and listing the ones that exist."""
    for split, part in dataset.items():
        for column in columns:
            if column not in part.column_names:
                raise ValueError(
                    f"column {column!r} not found in the {split} split of {source}; "
                    f"available columns: {', '.join(part.column_names)}"
                )


def drop_empty(
    dataset: datasets.DatasetDict, text_column: str, source: str, label_column: str | None = None
) -> datasets.DatasetDict:
    """Drop rows with no text (or no label); an empty split afterwards is a `ValueError`."""

    def keep(row: dict) -> bool:
        text = row[text_column]
        has_text = isinstance(text, str) and bool(text.strip())
        return has_text and (label_column is None or row[label_column] is not None)

    kept = dataset.filter(keep, desc="drop empty rows")
    for split, part in kept.items():
        if len(part) == 0:
            raise ValueError(
                f"the {split} split of {source} is empty after dropping rows without text in column {text_column!r}"
                + (f" or without a label in {label_column!r}" if label_column else "")
                + f" ({len(dataset[split])} rows before)"
            )
    return kept


def describe_source(data: str | os.PathLike | None) -> str:
    return "the standard-library corpus" if data is None else repr(os.fspath(data))
