"""The embedded default data: the Python standard library of the running interpreter, as a corpus and a task.

No download, ever: test folders are skipped, and the train/validation split is deterministic by file (a hash of the
path, stratified by top-level package), so every machine holds out the same files.

    from gptforge.training.corpus import stdlib_corpus, stdlib_classification
    lm = stdlib_corpus()                 # columns text, path; splits train, validation
    task = stdlib_classification(10)     # columns text, label (top-level package), path
"""

import hashlib
import os
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import datasets

from .defaults import DEFAULT_VALIDATION_SPLIT, LABEL_COLUMN, TEXT_COLUMN  # noqa: F401  (re-exported)

# Folders of the standard library that are tests, vendored packages or caches: never part of the corpus.
STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
# A default-classification class needs enough files that both splits get some.
MIN_FILES_PER_CLASS = 10


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
