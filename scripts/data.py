"""Data for every subcommand: where texts come from, and how they become model inputs.

Sources (`load_source`), in the order they are tried:
- nothing named: the embedded default, the Python standard library of the running interpreter (test folders
  skipped), split into train/validation deterministically by file; no download, ever;
- a local file (.txt, .md, .json, .jsonl, .csv, .parquet, .arrow) or a folder of them (a path with the word
  "train", "validation"/"valid"/"val"/"dev"/"eval" or "test" goes to that split, the rest to train);
- otherwise a Hugging Face Hub dataset id (only when online).

Sources without a validation split get one carved from their training rows (`validation_split`, seeded).

Model inputs:
- `pack_for_causal_lm`: tokenise with `datasets.map` (cached next to the data, optionally multi-process) and pack
  into fixed-length blocks, with EOS closing every document;
- `encode_for_classification`: truncated token ids plus integer labels; string labels are mapped to ids in sorted
  order and returned as `label_names` (the config's `id2label`).

Usage (from Python; the subcommands call these):

    from gptforge.scripts.data import load_source, pack_for_causal_lm
    raw = load_source(None)                       # the standard library, train + validation
    raw = load_source("data/", text_column="body")
    blocks = pack_for_causal_lm(raw, tokenizer, block_size=256)
"""

import argparse
import hashlib
import os
import re
import sysconfig
from collections import Counter
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import datasets
import torch

TEXT_COLUMN = "text"
LABEL_COLUMN = "label"
# What the default corpus and the splits carved from a training set hold out.
DEFAULT_VALIDATION_SPLIT = 0.1

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

# Folders of the standard library that are tests, vendored packages or caches: never part of the corpus.
STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
# A default-classification class needs enough files that both splits get some.
MIN_FILES_PER_CLASS = 10


# --------------------------------------------------------------------------------------------------------------------
# The embedded default: the standard library's own source
# --------------------------------------------------------------------------------------------------------------------


def stdlib_root() -> Path:
    """The running interpreter's standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Relative paths of the standard library's `.py` files, sorted, without test folders or `test_*.py` files."""
    root = root or stdlib_root()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                files.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(files)


def stdlib_package(relative_path: str) -> str:
    """Top-level package of a standard-library file (`email/mime/text.py` -> `email`); top-level modules: ``""``."""
    parts = Path(relative_path).parts
    return parts[0] if len(parts) > 1 else ""


def _file_rank(relative_path: str) -> str:
    # A content-independent, platform-independent order: the same files land in validation on every machine.
    return hashlib.sha256(relative_path.encode()).hexdigest()


def split_stdlib_files(
    files: list[str], validation_split: float = DEFAULT_VALIDATION_SPLIT, root: Path | None = None
) -> dict[str, list[str]]:
    """Deterministic train/validation split by file, stratified by top-level package and sized in bytes.

    Within each package (top-level modules form one group) files are visited in the order of a hash of their path;
    a file goes to validation while the package's validation share is below `validation_split` of its bytes,
    skipping files that would overshoot it twice over. Every package with two files or more gets at least one
    validation file, so each sizeable package is represented in both splits (and the default classification task,
    which uses this split, validates on every class).
    """
    root = root or stdlib_root()
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(stdlib_package(path), []).append(path)
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    for members in groups.values():
        if len(members) < 2 or validation_split <= 0:
            splits["train"] += members
            continue
        sizes = {path: (root / path).stat().st_size for path in members}
        target = validation_split * sum(sizes.values())
        chosen: list[str] = []
        held = 0
        for path in sorted(members, key=_file_rank):
            if held >= target:
                break
            if held + sizes[path] <= 2 * target:
                chosen.append(path)
                held += sizes[path]
        if not chosen:
            chosen = [min(members, key=lambda p: (sizes[p], _file_rank(p)))]
        splits["validation"] += chosen
        splits["train"] += [p for p in members if p not in chosen]
    return {name: sorted(paths) for name, paths in splits.items()}


def _read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):  # a few stdlib files are not UTF-8 (deliberately, for codec tests)
        return None


def _stdlib_documents(root: str, files: list[str]) -> Iterator[dict[str, str]]:
    for relative in files:
        text = _read_source(Path(root) / relative)
        if text and text.strip():
            yield {TEXT_COLUMN: text, "path": relative}


def _stdlib_chunks(root: str, files: list[str], labels: list[str], chunk_chars: int) -> Iterator[dict[str, str]]:
    """Whole lines gathered until a chunk reaches `chunk_chars`; chunks that are mostly blank are skipped."""
    for relative, label in zip(files, labels, strict=True):
        text = _read_source(Path(root) / relative)
        if not text:
            continue
        chunk: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            chunk.append(line)
            size += len(line)
            if size >= chunk_chars:
                body = "".join(chunk)
                if len(body.split()) >= 8:
                    yield {TEXT_COLUMN: body, LABEL_COLUMN: label, "path": relative}
                chunk, size = [], 0


def stdlib_corpus(
    validation_split: float = DEFAULT_VALIDATION_SPLIT, max_files: int | None = None, cache_dir: str | None = None
) -> datasets.DatasetDict:
    """The default language-modelling corpus: one document per standard-library file (columns `text`, `path`).

    `max_files` keeps every k-th file (a quick, still representative subset, for smoke runs).
    """
    root = stdlib_root()
    splits = _split_subset(root, stdlib_files(root), validation_split, max_files)
    return datasets.DatasetDict(
        {
            name: datasets.Dataset.from_generator(
                _stdlib_documents,
                gen_kwargs={"root": str(root), "files": paths},
                cache_dir=cache_dir,
                split=name,
            )
            for name, paths in splits.items()
        }
    )


def stdlib_classification(
    num_classes: int = 10,
    chunk_chars: int = 384,
    validation_split: float = DEFAULT_VALIDATION_SPLIT,
    max_files: int | None = None,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """The default classification task: a chunk of standard-library code, labelled with its top-level package.

    The classes are the `num_classes` largest packages (by bytes of source) among those with at least
    `MIN_FILES_PER_CLASS` files; the train/validation split is the corpus's, by file, so a model pretrained on the
    default corpus has never seen a validation chunk.
    """
    root = stdlib_root()
    files = stdlib_files(root)
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for relative in files:
        package = stdlib_package(relative)
        if package:
            sizes[package] += (root / relative).stat().st_size
            counts[package] += 1
    eligible = [package for package, _ in sizes.most_common() if counts[package] >= MIN_FILES_PER_CLASS]
    classes = set(eligible[:num_classes])
    if len(classes) < 2:
        raise ValueError(f"the standard library at {root} has {len(classes)} package(s) with enough files; need 2")
    splits = _split_subset(root, [f for f in files if stdlib_package(f) in classes], validation_split, max_files)
    return datasets.DatasetDict(
        {
            name: datasets.Dataset.from_generator(
                _stdlib_chunks,
                gen_kwargs={
                    "root": str(root),
                    "files": paths,
                    "labels": [stdlib_package(p) for p in paths],
                    "chunk_chars": chunk_chars,
                },
                cache_dir=cache_dir,
                split=name,
            )
            for name, paths in splits.items()
        }
    )


def _split_subset(
    root: Path, files: list[str], validation_split: float, max_files: int | None
) -> dict[str, list[str]]:
    """Split `files`, then keep every k-th file of each split so that `max_files` remain in all.

    Splitting first keeps a file's side independent of `max_files`: a smoke run never validates on a file that a
    full run trains on.
    """
    splits = split_stdlib_files(files, validation_split, root)
    if max_files is None or len(files) <= max_files:
        return splits
    kept = {}
    for name, paths in splits.items():
        count = max(1, round(max_files * len(paths) / len(files)))
        step = len(paths) / count
        kept[name] = [paths[int(i * step)] for i in range(count)]
    return kept


# --------------------------------------------------------------------------------------------------------------------
# Any source `datasets` reads
# --------------------------------------------------------------------------------------------------------------------


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


def default_num_proc(rows: int) -> int:
    # The Rust tokenizer already encodes a batch on every core; processes pay off only for many rows.
    return min(os.cpu_count() or 1, 8) if rows >= 1000 else 1


# --------------------------------------------------------------------------------------------------------------------
# Tokenise
# --------------------------------------------------------------------------------------------------------------------


def pack_for_causal_lm(
    dataset: datasets.DatasetDict,
    tokenizer: Any,
    block_size: int,
    text_column: str = TEXT_COLUMN,
    num_proc: int | None = None,
    source: str = "the data",
) -> datasets.DatasetDict:
    """Tokenise every document, close it with EOS, concatenate and cut into `block_size` blocks (`input_ids`).

    Each `map` batch (1000 documents) drops its last partial block, as Transformers' `run_clm.py` does. A split with
    fewer tokens than one block is a `ValueError` that gives the token count.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; packing needs one to separate documents")
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        # verbose=False: whole documents are longer than model_max_length by design (they get packed)
        ids = tokenizer(batch[text_column], add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": [row + [eos] for row in ids]}

    def group(batch: dict[str, list]) -> dict[str, list]:
        stream = list(chain.from_iterable(batch["input_ids"]))
        usable = len(stream) // block_size * block_size
        return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}

    packed = {}
    for split, part in dataset.items():
        procs = num_proc or default_num_proc(len(part))
        tokenized = part.map(
            tokenize, batched=True, remove_columns=part.column_names, num_proc=procs, desc=f"tokenize {split}"
        )
        blocks = tokenized.map(group, batched=True, num_proc=procs, desc=f"pack {split} into blocks of {block_size}")
        if len(blocks) == 0:
            tokens = sum(len(row) for row in list(tokenized["input_ids"]))
            raise ValueError(
                f"the {split} split of {source} holds {tokens} tokens, fewer than one block of block_size={block_size}; "
                "use a smaller block size or more data"
            )
        packed[split] = blocks.with_format("torch")
    return datasets.DatasetDict(packed)


def causal_lm_collator(features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack equal-length blocks; the labels are the inputs (the model shifts them)."""
    input_ids = torch.stack([torch.as_tensor(f["input_ids"]) for f in features])
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def label_names_of(dataset: datasets.DatasetDict, label_column: str, source: str) -> list[str]:
    """Class names in id order: a `ClassLabel`'s own names, else the sorted distinct values of every split.

    Fewer than two classes is a `ValueError` naming the class.
    """
    feature = dataset["train"].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        present = set(chain.from_iterable(part.unique(label_column) for part in dataset.values()))
    else:
        values = set(chain.from_iterable(part.unique(label_column) for part in dataset.values()))
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise ValueError(
                f"label column {label_column!r} of {source} mixes value types {sorted(k.__name__ for k in kinds)}"
            )
        names = [str(v) for v in sorted(values)]
        present = set(names)
    if len(present) < 2:
        raise ValueError(
            f"label column {label_column!r} of {source} has a single class ({sorted(map(str, present))}); "
            "classification needs at least two"
        )
    return names


def encode_for_classification(
    dataset: datasets.DatasetDict,
    tokenizer: Any,
    label_names: list[str],
    max_length: int,
    text_column: str = TEXT_COLUMN,
    label_column: str = LABEL_COLUMN,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """`input_ids` (truncated to `max_length`) and integer `labels` in `label_names` order."""
    index = {name: i for i, name in enumerate(label_names)}
    is_class_label = isinstance(dataset["train"].features[label_column], datasets.ClassLabel)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(batch[text_column], truncation=True, max_length=max_length)["input_ids"]
        labels = batch[label_column] if is_class_label else [index[str(v)] for v in batch[label_column]]
        return {"input_ids": ids, "labels": labels}

    encoded = {}
    for split, part in dataset.items():
        encoded[split] = part.map(
            encode,
            batched=True,
            remove_columns=part.column_names,
            num_proc=num_proc or default_num_proc(len(part)),
            desc=f"tokenize {split}",
        )
    return datasets.DatasetDict(encoded)


def subsample(dataset: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """At most `limit` rows, a seeded random choice (the order of the source may be sorted by class)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def add_data_arguments(parser: argparse.ArgumentParser, label_column: bool = False, tokenize: bool = True) -> None:
    """The data flags the subcommands share (`label_column`: classification; `tokenize`: uses `datasets.map`)."""
    parser.add_argument(
        "--data",
        default=None,
        help="local file/folder (txt, json, jsonl, csv, parquet) or Hub dataset id; default: the stdlib corpus",
    )
    parser.add_argument("--data-config", default=None, help="configuration name of a Hub dataset")
    parser.add_argument("--text-column", default=TEXT_COLUMN, help="column holding the text")
    if label_column:
        parser.add_argument("--label-column", default=LABEL_COLUMN, help="column holding the class label")
    parser.add_argument(
        "--sample-by",
        default="document",
        choices=["document", "paragraph", "line"],
        help="text files: one row per file, paragraph or line",
    )
    parser.add_argument(
        "--validation-split",
        type=float,
        default=DEFAULT_VALIDATION_SPLIT,
        help="fraction held out when the data has no validation split",
    )
    parser.add_argument("--max-files", type=int, default=None, help="default corpus only: use this many files")
    if tokenize:
        parser.add_argument("--num-proc", type=int, default=None, help="processes for datasets.map (default: auto)")
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder (default: the datasets default)")


# every keyword `add_data_arguments` may add, as the subcommands' `main` functions name them
_DATA_KEYWORDS = (
    "data", "data_config", "text_column", "label_column", "sample_by", "validation_split", "max_files", "num_proc",
    "cache_dir",
)  # fmt: skip


def data_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The flags `add_data_arguments` added to a parser, as keyword arguments for the subcommand's `main`."""
    return {name: getattr(args, name) for name in _DATA_KEYWORDS if hasattr(args, name)}


__all__ = [
    "add_data_arguments",
    "data_arguments",
    "TEXT_COLUMN",
    "LABEL_COLUMN",
    "causal_lm_collator",
    "drop_empty",
    "encode_for_classification",
    "label_names_of",
    "load_source",
    "pack_for_causal_lm",
    "require_columns",
    "split_stdlib_files",
    "stdlib_classification",
    "stdlib_corpus",
    "stdlib_files",
    "subsample",
]
