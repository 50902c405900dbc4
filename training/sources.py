"""Where texts come from: a local file or folder, a `save_to_disk` folder, a Hub dataset id, or the embedded default.

Sources (`load_data`), in the order they are tried:
- nothing named: the standard-library corpus (`corpus.py`);
- a folder written by `datasets.save_to_disk`;
- a local text file (plain text, Markdown, code: see `TEXT_EXTENSIONS`), a table (.json, .jsonl, .csv, .parquet,
  .arrow), or a folder of either kind (a path with the word "train", "validation"/"valid"/"val"/"dev"/"eval" or
  "test" goes to that split, the rest to train);
- otherwise a Hugging Face Hub dataset id (only when online).

Text files are read in rows of about `TEXT_ROW_BYTES`, cut at line ends, so one long file still spreads over many
rows (and processes); the `continues` column marks a row whose document goes on in the next row, so packing closes
each document, not each row, with EOS. Bytes that are not UTF-8 are a `UsageError` naming the file and the offset,
unless `encoding_errors="replace"`.

A source without a validation split gets one, held out without asking (`hold_out`): a seeded share of the rows
when there are at least `MIN_ROWS_TO_SAMPLE` of them, else the last share of the text, cut at a line end (as
nanoGPT keeps the last 10% of its token file). `LoadedData.held_out` says which.

    from gptforge.training.sources import load_data
    loaded = load_data("notes.txt")                 # train + validation, and what was held out
    loaded = load_data("data/", text_column="body")
"""

import ctypes
import json
import os
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .corpus import DEFAULT_VALIDATION_SPLIT, TEXT_COLUMN, stdlib_corpus
from .errors import UsageError

# Files read as text, one document per file: prose, markup and source code.
TEXT_EXTENSIONS = frozenset(
    ".txt .text .md .markdown .rst .tex .py .pyi .ipynb .c .h .cc .cpp .hpp .cs .java .kt .scala .go .rs .js .ts "
    ".jsx .tsx .rb .php .pl .lua .r .jl .swift .sh .bash .sql .html .htm .css .xml .yaml .yml .toml .ini .cfg".split()
)
# Tables: file extension -> `datasets` packaged builder.
TABLE_BUILDERS: dict[str, str] = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
# The column of text rows that says the next row continues the same document (no EOS between them).
CONTINUES_COLUMN = "continues"
TEXT_FEATURES = datasets.Features(
    {TEXT_COLUMN: datasets.Value("string"), "path": datasets.Value("string"), CONTINUES_COLUMN: datasets.Value("bool")}
)
# Bytes per text row: small enough that a large file spreads over many rows and processes, large enough that a row
# holds many lines.
TEXT_ROW_BYTES = 1 << 16
# Below this many training rows a seeded row sample is too coarse; the tail of the text is held out instead.
MIN_ROWS_TO_SAMPLE = 20
# The bytes read to tell a binary file from text.
SNIFF_BYTES = 8192
ENCODING_ERRORS = ("strict", "replace")
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


@dataclass
class LoadedData:
    """A `DatasetDict` with `train` (and `validation`, unless holding out was declined), and how it came about."""

    dataset: datasets.DatasetDict
    source: str  # for messages: "'notes.txt'"
    held_out: str | None = None  # what was held out for validation, when the source had no validation split


def supported_kinds() -> str:
    """The file types a source may be, for messages."""
    return (
        "text/code files (" + ", ".join(sorted(TEXT_EXTENSIONS)) + "), tables (" + ", ".join(TABLE_BUILDERS) + "), "
        "a folder of either, a datasets.save_to_disk folder, or a Hub dataset id"
    )


def _split_of(relative_path: str) -> str:
    """The split a file belongs to by the words of its path; "train" when none is a split name."""
    words = re.split(r"[^a-z]+", relative_path.lower())
    for word in reversed(words):  # the file name wins over the folders above it
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return "train"


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in TEXT_EXTENSIONS:
        return "text"
    return TABLE_BUILDERS.get(suffix)


def check_readable(path: Path, kind: str) -> bool:
    """`UsageError` for a file that cannot be opened or, read as text, is binary; False for an empty file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read {str(path)!r}: {exc.strerror or exc}; check its permissions") from None
    if not head:
        return False
    if kind in ("text", "json", "csv") and b"\x00" in head:
        nul = head.index(b"\x00")
        raise UsageError(
            f"{str(path)!r} is a binary file (a NUL byte at offset {nul}), not text; "
            f"pass UTF-8 text, or a table ({', '.join(TABLE_BUILDERS)})"
        )
    return True


def _local_data_files(path: Path) -> tuple[str, dict[str, list[str]]]:
    """(kind, {split: files}) for a local file or folder: kind is "text" or a `datasets` builder name."""
    if path.is_file():
        kind = _kind(path)
        if kind is None:
            raise UsageError(
                f"cannot read {str(path)!r}: no loader reads {path.suffix or 'files without an extension'!r}; "
                f"supported: {supported_kinds()}"
            )
        if not check_readable(path, kind):
            raise UsageError(f"{str(path)!r} is empty: there is no text to read")
        return kind, {"train": [str(path)]}
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"cannot read folder {str(path)!r}: permission denied")
    kind_of = {p: k for p in path.rglob("*") if p.is_file() and (k := _kind(p)) is not None and not _hidden(p, path)}
    found = sorted(kind_of)
    if not found:
        present = sorted(p.name for p in path.iterdir())[:10]
        raise UsageError(
            f"no data files in folder {str(path)!r} (found: {', '.join(present) or 'nothing'}); "
            f"supported: {supported_kinds()}"
        )
    kinds = set(kind_of.values())
    if len(kinds) > 1:
        raise UsageError(
            f"folder {str(path)!r} mixes kinds of files that are read differently ({', '.join(sorted(kinds))}); "
            "keep text files and each kind of table in folders of their own"
        )
    kind = kinds.pop()
    data_files: dict[str, list[str]] = {}
    for p in found:
        if check_readable(p, kind):  # empty files hold nothing; skip them
            data_files.setdefault(_split_of(str(p.relative_to(path))), []).append(str(p))
    if not data_files:
        raise UsageError(f"every data file in folder {str(path)!r} is empty: there is no text to read")
    if "train" not in data_files:
        raise UsageError(
            f"folder {str(path)!r} has no training files: every file name matched a validation/test pattern "
            f"({sorted(data_files)})"
        )
    return kind, data_files


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts)


def _pieces(handle: Any, row_bytes: int) -> Iterator[bytes]:
    """Consecutive byte pieces of about `row_bytes`, each ending after a newline where there is one."""
    carry = b""
    while True:
        block = handle.read(row_bytes)
        if not block:
            if carry:
                yield carry
            return
        data = carry + block
        if len(block) < row_bytes:  # a short read is the end of the file: the rest is one row
            yield data
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # one very long line: cut before a UTF-8 sequence that may be incomplete
            cut = len(data)
            while cut > 0 and len(data) - cut < 3 and (data[cut - 1] & 0xC0) == 0x80:
                cut -= 1
            cut = cut - 1 if cut > 0 and data[cut - 1] >= 0xC0 else len(data)
            cut = cut or len(data)
        piece, carry = data[:cut], data[cut:]
        if piece:
            yield piece


def text_rows(path: str, encoding_errors: str = "strict", row_bytes: int = TEXT_ROW_BYTES) -> Iterator[dict]:
    """The rows of one text file: about `row_bytes` each, cut after a newline where the row has one.

    Bytes that are not UTF-8 raise `UsageError` with the file and byte offset (or become U+FFFD with "replace").
    """
    offset = 0
    previous: str | None = None
    with open(path, "rb") as handle:
        for piece in _pieces(handle, row_bytes):
            try:
                text = piece.decode("utf-8", errors=encoding_errors)
            except UnicodeDecodeError as exc:
                raise UsageError(
                    f"{path!r} is not UTF-8 text: byte {piece[exc.start]:#04x} at offset {offset + exc.start} "
                    "cannot be decoded; convert the file to UTF-8, or pass --encoding-errors replace to read such "
                    "bytes as U+FFFD"
                ) from None
            offset += len(piece)
            if previous is not None:
                yield {TEXT_COLUMN: previous, "path": path, CONTINUES_COLUMN: True}
            previous = text
    if previous is not None:
        yield {TEXT_COLUMN: previous, "path": path, CONTINUES_COLUMN: False}


def _text_dataset_rows(paths: list[str], stamps: list[str], encoding_errors: str) -> Iterator[dict]:
    del stamps  # part of the `datasets` cache key only: an edited file is read again
    for path in paths:
        yield from text_rows(path, encoding_errors)


def _usage_error_in(exc: BaseException | None) -> UsageError | None:
    """The `UsageError` a `datasets` builder wrapped (it re-raises generator errors as its own type)."""
    while exc is not None:
        if isinstance(exc, UsageError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _stamp(path: str) -> str:
    stat = os.stat(path)
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def read_text_files(
    data_files: dict[str, list[str]], encoding_errors: str, cache_dir: str | None
) -> datasets.DatasetDict:
    """Text files as rows (`text`, `path`, `continues`), written once to Arrow in the `datasets` cache."""
    splits = {}
    for split, files in data_files.items():
        try:
            # one process: reading is disk-bound, and the rows are spread over processes when tokenised
            splits[split] = datasets.Dataset.from_generator(
                _text_dataset_rows,
                gen_kwargs={"paths": files, "stamps": [_stamp(f) for f in files], "encoding_errors": encoding_errors},
                cache_dir=cache_dir,
                features=TEXT_FEATURES,
                split=datasets.Split(split) if split != "validation" else datasets.Split.VALIDATION,
            )
        except Exception as exc:  # noqa: BLE001 - datasets wraps the reader's own errors
            if (usage := _usage_error_in(exc)) is not None:
                raise usage from None
            raise
    return datasets.DatasetDict(splits)


def _looks_like_hub_id(name: str) -> bool:
    # "name" or "org/name": no leading "./", "/" or "~", at most one slash, no file extension
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and not Path(name).suffix


def _offline() -> bool:
    return any(
        os.environ.get(var, "").lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def read_raw(
    data: str | os.PathLike,
    *,
    data_config: str | None = None,
    sample_by: str = "document",
    encoding_errors: str = "strict",
    cache_dir: str | None = None,
    streaming: bool = False,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """The source's own splits, as found: nothing held out, nothing dropped."""
    if encoding_errors not in ENCODING_ERRORS:
        raise UsageError(f"encoding_errors must be one of {ENCODING_ERRORS}, got {encoding_errors!r}")
    name = os.fspath(data)
    path = Path(name).expanduser()
    if path.exists():
        if is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
            if streaming:
                loaded = (
                    datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})
                    if isinstance(loaded, datasets.DatasetDict)
                    else loaded.to_iterable_dataset()
                )
        else:
            kind, data_files = _local_data_files(path)
            if kind == "text" and sample_by == "document":
                if streaming:
                    loaded = datasets.IterableDatasetDict(
                        {
                            split: datasets.IterableDataset.from_generator(
                                _text_dataset_rows,
                                gen_kwargs={
                                    "paths": files,
                                    "stamps": [""] * len(files),
                                    "encoding_errors": encoding_errors,
                                },
                                features=TEXT_FEATURES,
                            )
                            for split, files in data_files.items()
                        }
                    )
                else:
                    loaded = read_text_files(data_files, encoding_errors, cache_dir)
            else:
                builder = "text" if kind == "text" else kind
                kwargs: dict[str, Any] = {"sample_by": sample_by} if builder == "text" else {}
                if builder in ("text", "csv") and encoding_errors == "replace":
                    kwargs["encoding_errors"] = "replace"
                try:
                    loaded = datasets.load_dataset(
                        builder, data_files=data_files, cache_dir=cache_dir, streaming=streaming, **kwargs
                    )
                except Exception as exc:  # noqa: BLE001 - the builders raise many types for a malformed file
                    if isinstance(exc, UsageError):
                        raise
                    files = [f for group in data_files.values() for f in group]
                    raise UsageError(
                        f"cannot read {name!r} as {builder}: {_first_line(exc)}"
                        + (
                            f" (files: {', '.join(files[:3])}{' ...' if len(files) > 3 else ''})"
                            if path.is_dir()
                            else ""
                        )
                    ) from None
    elif _looks_like_hub_id(name):
        if _offline():
            raise UsageError(
                f"no data at {name!r}: no local file or folder {str(path.resolve())!r}, and the Hub dataset "
                f"{name!r} cannot be fetched offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
            )
        try:
            loaded = datasets.load_dataset(name, data_config, cache_dir=cache_dir, streaming=streaming)
        except Exception as exc:  # noqa: BLE001 - the Hub raises many types; both places tried are named
            raise UsageError(
                f"no data at {name!r}: no local file or folder {str(path.resolve())!r}, and loading the Hub "
                f"dataset {name!r} failed: {_first_line(exc)}"
            ) from exc
    else:
        raise UsageError(f"no data at {name!r}: no such file or folder {str(path.resolve())!r}")
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    elif isinstance(loaded, datasets.IterableDataset):
        loaded = datasets.IterableDatasetDict({"train": loaded})
    return loaded


def _first_line(exc: BaseException) -> str:
    cause = exc
    while cause.__cause__ is not None:  # the builder's own error says what was wrong with the file
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def load_data(
    data: str | os.PathLike | None = None,
    *,
    text_column: str = TEXT_COLUMN,
    label_column: str | None = None,
    hold_out: bool = True,
    data_config: str | None = None,
    validation_split: float = DEFAULT_VALIDATION_SPLIT,
    sample_by: str = "document",
    encoding_errors: str = "strict",
    seed: int = 0,
    cache_dir: str | None = None,
    max_files: int | None = None,
) -> LoadedData:
    """Read a source, check its columns, drop rows without text (or label), and hold out a validation split when
    it has none and `hold_out` is set.

    Every problem with the source is a `UsageError` that names it: a missing path, an unreadable, empty or binary
    file, bytes that are not UTF-8, a file type no loader reads, a missing column (the columns there are listed), a
    split left empty.
    """
    source = describe_source(data)
    if data is None:
        raw = stdlib_corpus(validation_split=validation_split, max_files=max_files, cache_dir=cache_dir)
    else:
        raw = read_raw(
            data, data_config=data_config, sample_by=sample_by, encoding_errors=encoding_errors, cache_dir=cache_dir
        )
    if "train" not in raw:
        raise UsageError(f"{source} has no train split; its splits are {sorted(raw)}")
    raw = _rename_validation(raw)
    require_columns(raw, [text_column] + ([label_column] if label_column else []), source)
    raw = drop_empty(raw, text_column, source, label_column=label_column)
    held_out = None
    if hold_out and "validation" not in raw:
        raw, held_out = hold_out_validation(
            raw["train"], validation_split, seed, source, text_column, by_rows=label_column is not None
        )
    return LoadedData(raw, source, held_out)


def _rename_validation(dataset: datasets.DatasetDict) -> datasets.DatasetDict:
    """`train` + `validation` (from `valid`/`dev`/`test` when there is no `validation`), or `train` alone."""
    if "validation" in dataset:
        return datasets.DatasetDict({"train": dataset["train"], "validation": dataset["validation"]})
    for alias in ("valid", "dev", "test"):
        if alias in dataset:
            return datasets.DatasetDict({"train": dataset["train"], "validation": dataset[alias]})
    return datasets.DatasetDict({"train": dataset["train"]})


def hold_out_validation(
    train: datasets.Dataset, share: float, seed: int, source: str, text_column: str, by_rows: bool = False
) -> tuple[datasets.DatasetDict, str]:
    """(train + validation, a sentence saying what was held out).

    With `MIN_ROWS_TO_SAMPLE` rows or more (or `by_rows`, for labelled rows, and two rows or more), a seeded share
    of the rows, the rest keeping their order (text rows of one document stay adjacent); otherwise the last `share`
    of the text, cut at a line end.
    """
    if not 0 < share < 1:
        raise UsageError(f"validation_split must be between 0 and 1 (exclusive), got {share}")
    rows = len(train)
    if rows >= MIN_ROWS_TO_SAMPLE or (by_rows and rows >= 2):
        count = min(rows - 1, max(1, round(rows * share)))
        held = sorted(random.Random(seed).sample(range(rows), count))
        held_set = set(held)
        kept = [i for i in range(rows) if i not in held_set]
        split = datasets.DatasetDict({"train": train.select(kept), "validation": train.select(held)})
        return split, (
            f"held out {count} of {rows} rows ({count / rows:.0%}, seeded with {seed}) of {source} for validation, "
            "since it has no validation split"
        )
    if by_rows:
        raise UsageError(
            f"{source} has {rows} labelled row(s) and no validation split; at least 2 rows are needed to hold one out"
        )
    return _hold_out_tail(train, share, source, text_column)


def _hold_out_tail(
    train: datasets.Dataset, share: float, source: str, text_column: str
) -> tuple[datasets.DatasetDict, str]:
    rows = train.to_list()
    total = sum(len(row[text_column]) for row in rows)
    wanted = max(1, round(total * share))
    # walk back from the end until `wanted` characters are gathered; cut the row where that happens at a line end
    taken, index = 0, len(rows)
    while index > 0 and taken + len(rows[index - 1][text_column]) <= wanted:
        index -= 1
        taken += len(rows[index][text_column])
    head_rows, tail_rows = rows[:index], rows[index:]
    if taken < wanted and index > 0:
        row = rows[index - 1]
        text = row[text_column]
        cut = len(text) - (wanted - taken)
        line_end = text.rfind("\n", 0, cut) + 1
        if line_end > 0 and text[:line_end].strip():
            cut = line_end
        head, tail = text[:cut], text[cut:]
        if head.strip() and tail.strip():
            head_rows = rows[: index - 1] + [{**row, text_column: head, **_ends(row)}]
            tail_rows = [{**row, text_column: tail}] + tail_rows
    if not head_rows or not tail_rows:
        raise UsageError(
            f"{source} holds {total} characters of text, too little to hold out a validation part; "
            "pass more text, or a validation file"
        )
    held_chars = sum(len(row[text_column]) for row in tail_rows)
    features = train.features
    split = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(head_rows, features=features),
            "validation": datasets.Dataset.from_list(tail_rows, features=features),
        }
    )
    return split, (
        f"held out the last {held_chars:,} of {total:,} characters ({held_chars / total:.0%}) of {source} for "
        f"validation, since it has no validation split and too few rows ({len(rows)}) to sample"
    )


def _ends(row: dict) -> dict:
    # the training part of a cut row ends its document there: packing closes it with EOS
    return {CONTINUES_COLUMN: False} if CONTINUES_COLUMN in row else {}


def load_source(data: str | os.PathLike | None = None, **kwargs: Any) -> datasets.DatasetDict:
    """`load_data(...).dataset`: the splits alone."""
    return load_data(data, **kwargs).dataset


def require_columns(dataset: datasets.DatasetDict, columns: list[str], source: str) -> None:
    """`UsageError` naming the missing column and listing the ones that exist."""
    for split, part in dataset.items():
        for column in columns:
            if column not in part.column_names:
                raise UsageError(
                    f"column {column!r} not found in the {split} split of {source}; "
                    f"available columns: {', '.join(part.column_names)}"
                )


def drop_empty(
    dataset: datasets.DatasetDict, text_column: str, source: str, label_column: str | None = None
) -> datasets.DatasetDict:
    """Drop rows with no text (or no label); an empty split afterwards is a `UsageError`."""

    def keep(batch: dict[str, list]) -> list[bool]:
        texts = batch[text_column]
        labels = batch[label_column] if label_column else [0] * len(texts)
        return [isinstance(t, str) and bool(t.strip()) and y is not None for t, y in zip(texts, labels, strict=True)]

    kept = datasets.DatasetDict(
        {
            split: part.filter(releasing_pages(keep, mapped_files(part)), batched=True, desc="drop empty rows")
            for split, part in dataset.items()
        }
    )
    for split, part in kept.items():
        if len(part) == 0:
            raise UsageError(
                f"the {split} split of {source} is empty after dropping rows without text in column {text_column!r}"
                + (f" or without a label in {label_column!r}" if label_column else "")
                + f" ({len(dataset[split])} rows before)"
            )
    return kept


def mapped_files(dataset: datasets.Dataset | datasets.DatasetDict) -> frozenset[str]:
    """The Arrow files a dataset reads through memory maps (its cache files), as real paths."""
    parts = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    return frozenset(os.path.realpath(entry["filename"]) for part in parts for entry in part.cache_files)


def release_mapped_pages(dataset: datasets.Dataset | datasets.DatasetDict | frozenset[str]) -> None:
    """Let go of the pages of a dataset's memory-mapped Arrow files (or of the files named) that this process has
    read (Linux; elsewhere nothing).

    Pages of a memory-mapped file, once read, stay in the process's resident memory until unmapped, so scanning a
    1 GB source (dropping empty rows, training a tokenizer, tokenising) would hold 1 GB in the process that read it;
    reading rows scattered over the file (a held-out sample) maps several times their size, since the kernel maps
    the file in large pieces. `MADV_DONTNEED` drops them from the process; the file's pages stay in the page cache
    and a later read maps them again. Only read-only mappings of those files are touched (found in
    `/proc/self/maps`), so no data can be lost.
    """
    maps = Path("/proc/self/maps")
    if not sys.platform.startswith("linux") or not maps.is_file():
        return
    files = dataset if isinstance(dataset, frozenset) else mapped_files(dataset)
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)  # address perms offset dev inode pathname
        if len(fields) == 6 and fields[5] in files and "w" not in fields[1]:
            start, end = (int(address, 16) for address in fields[0].split("-"))
            madvise(start, end - start, 4)  # MADV_DONTNEED; a failure only leaves the pages where they were


def releasing_pages(function: Any, files: frozenset[str]) -> Any:
    """`function`, followed after each call by `release_mapped_pages(files)`: a `map` or `filter` over a large source
    then holds one batch of it in memory, not every page it has read."""

    def run(batch: dict[str, list]) -> Any:
        result = function(batch)
        release_mapped_pages(files)
        return result

    return run


def describe_source(data: str | os.PathLike | None) -> str:
    return "the standard-library corpus" if data is None else repr(os.fspath(data))


def source_stamp(data: str | os.PathLike | None, **settings: Any) -> str:
    """A cheap fingerprint of a source and the settings that shape its rows: file paths, sizes and modification
    times (no file is read), or the Hub id; a changed file or setting changes it."""
    parts: list[Any] = [settings]
    if data is None:
        parts.append(["stdlib", str(Path(os.__file__).parent)])
    else:
        path = Path(os.fspath(data)).expanduser()
        if path.is_file():
            parts.append(_stamp(str(path.resolve())))
        elif path.is_dir():
            parts.extend(_stamp(str(p)) for p in sorted(path.resolve().rglob("*")) if p.is_file())
        else:
            parts.append(["hub", os.fspath(data)])
    return json.dumps(parts, sort_keys=True, default=str)
