"""Train a gptforge tokenizer with the `tokenizers` library's own (Rust, multi-threaded) BPE trainer.

Usage:

    from pathlib import Path
    from gptforge.tokenization import train_tokenizer

    tok = train_tokenizer(Path("data").glob("*.txt"), vocab_size=8192, model_max_length=config.max_position_embeddings)
    tok = train_tokenizer(dataset, vocab_size=8192, text_column="content")   # a datasets.Dataset
    tok.save_pretrained("runs/tok")   # tokenizer.json + tokenizer_config.json
"""

import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from tokenizers import pre_tokenizers
from tokenizers.trainers import BpeTrainer

from .tokenization_gptforge import EOS_TOKEN, PAD_TOKEN, GPTForgeTokenizer, byte_level_bpe, check_text_input

BYTE_ALPHABET_SIZE = 256
# Rows per batch handed to the trainer from a `datasets.Dataset`: one Python round trip per batch, not per row.
_DATASET_BATCH = 1000
_NOTHING = object()


@dataclass
class _Seen:
    items: int = 0
    chars: int = 0


def train_tokenizer(
    corpus: Iterable[str] | Iterable[os.PathLike] | Any,
    vocab_size: int,
    *,
    text_column: str = "text",
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (),
    model_max_length: int | None = None,
    add_bos_token: bool = False,
    show_progress: bool = False,
) -> GPTForgeTokenizer:
    """Train a byte-level BPE vocabulary and return it as a ready `GPTForgeTokenizer`.

    Args:
        corpus: one of
            - an iterable of `str` (each item is text; lists of str are taken as batches),
            - an iterable of `pathlib.Path` / `os.PathLike` (UTF-8 text files, read by the Rust trainer itself),
            - a `datasets.Dataset` or `datasets.IterableDataset` with a `text_column`.
            Plain `str` items are always text, never paths: guessing would silently train on file names the day a
            path is mistyped. Wrap paths with `pathlib.Path` (a list of str paths triggers a warning).
        vocab_size: final vocabulary size, special tokens and the 256 byte symbols included. Small corpora may
            stop short of it once no pair reaches `min_frequency`.
        text_column: the column holding the text when `corpus` is a dataset.
        min_frequency: a pair must occur this many times to be merged.
        special_tokens: extra special tokens (e.g. chat markers), given ids 2, 3, ... after `<|endoftext|>` (0)
            and `<|pad|>` (1). They are never split and never produced by merges.
        model_max_length: the model's context length (`config.max_position_embeddings`); truncation uses it.
        add_bos_token: prepend `<|endoftext|>` to every encoded sequence.
        show_progress: the trainer's progress bar.

    Raises:
        ValueError: empty corpus, a `vocab_size` below the 256 byte symbols plus the special tokens (the message
            names the minimum), duplicate special tokens, or a dataset without `text_column`.
        TypeError: a corpus item that is not text, a corpus that is a bare `str` / a mapping, a non-int vocab_size.
        FileNotFoundError: a listed file does not exist.
    """
    extras = list(special_tokens)
    all_special = [EOS_TOKEN, PAD_TOKEN, *extras]
    for token in extras:
        if not isinstance(token, str) or not token:
            raise TypeError(f"special tokens must be non-empty str, got {token!r}")
    if len(set(all_special)) != len(all_special):
        raise ValueError(f"duplicate special tokens in {all_special} ({EOS_TOKEN} and {PAD_TOKEN} are built in)")
    minimum = BYTE_ALPHABET_SIZE + len(all_special)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size!r} is too small: the minimum is {minimum} "
            f"({BYTE_ALPHABET_SIZE} byte symbols + {len(all_special)} special tokens), and merges need more"
        )

    backend = byte_level_bpe()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=all_special,
        # All 256 byte symbols, seen in the corpus or not, so any input stays encodable (no unknown token).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )

    files, texts = _split_corpus(corpus, text_column)
    if files is not None:
        if sum(os.path.getsize(path) for path in files) == 0:
            raise ValueError(f"the corpus is empty: the {len(files)} file(s) hold no text")
        backend.train(files, trainer=trainer)
    else:
        assert texts is not None  # _split_corpus returns exactly one of the two
        seen = _Seen()
        backend.train_from_iterator(_checked(texts, seen), trainer=trainer)
        if seen.chars == 0:
            raise ValueError(f"the corpus is empty: {seen.items} item(s) and no text")

    init_kwargs: dict[str, Any] = {"extra_special_tokens": extras} if extras else {}
    if model_max_length is not None:
        init_kwargs["model_max_length"] = model_max_length
    return GPTForgeTokenizer(tokenizer_object=backend, add_bos_token=add_bos_token, **init_kwargs)


def _split_corpus(corpus: Any, text_column: str) -> tuple[list[str] | None, Iterator[Any] | None]:
    """Return (file paths, None) or (None, iterator of texts or text batches)."""
    # `datasets` is a dependency, but importing it costs ~0.3 s; a caller holding a Dataset has imported it already.
    datasets = sys.modules.get("datasets")
    if datasets is not None and isinstance(corpus, (datasets.Dataset, datasets.IterableDataset)):
        return None, _dataset_texts(corpus, text_column)
    if isinstance(corpus, (str, bytes)):
        raise TypeError(
            f"corpus is a bare {type(corpus).__name__}; pass a list of texts ([text]) or of files ([Path(path)])"
        )
    if isinstance(corpus, os.PathLike):
        corpus = [corpus]
    if isinstance(corpus, Mapping):
        raise TypeError(
            f"corpus is a mapping ({type(corpus).__name__}); pass one split of it, e.g. corpus['train'], "
            "or an iterable of texts"
        )
    try:
        items = iter(corpus)
    except TypeError:
        raise TypeError(
            f"corpus must be an iterable of str or of paths, or a datasets.Dataset; got {type(corpus).__name__}"
        ) from None

    first = next(items, _NOTHING)
    if first is _NOTHING:
        raise ValueError("the corpus is empty: it yielded no item")
    if isinstance(first, os.PathLike):
        paths = [os.fspath(path) for path in chain([first], items)]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} corpus file(s) not found: {missing[:5]}")
        return paths, None
    if isinstance(first, str) and "\n" not in first and len(first) < 4096 and os.path.isfile(first):
        warnings.warn(
            f"corpus[0] is the path of an existing file ({first!r}) but str items are trained on as text; "
            "wrap paths with pathlib.Path to train on the files' contents",
            UserWarning,
            stacklevel=3,
        )
    return None, chain([first], items)


def _dataset_texts(dataset: Any, text_column: str) -> Iterator[Any]:
    columns = dataset.column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"text_column={text_column!r} is not in the dataset; its columns are {columns}")
    if hasattr(dataset, "select_columns") and columns is not None:
        # Decode only the text column, not every feature of every row.
        dataset = dataset.select_columns([text_column])
    for batch in dataset.iter(batch_size=_DATASET_BATCH):
        yield batch[text_column]


def _checked(texts: Iterator[Any], seen: _Seen) -> Iterator[Any]:
    """Pass items through to the trainer, refusing non-text with an error that names the item and its type.

    The trainer's own error for a non-str item is an opaque conversion failure from Rust.
    """
    for index, item in enumerate(texts):
        # A str, or a batch (list) of str: the two shapes `train_from_iterator` accepts.
        check_text_input(item, f"corpus[{index}]", max_depth=1)
        seen.items += 1
        seen.chars += len(item) if isinstance(item, str) else sum(map(len, item))
        yield item
