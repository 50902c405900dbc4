"""How texts become model inputs: packed causal-LM blocks, or truncated classification examples.

- `pack_for_causal_lm`: tokenise and pack in one `datasets.map` pass (multi-process for many rows, written to
  memory-mapped Arrow files) into fixed-length int32 blocks, with EOS closing every document;
- `start_documents_with_bos`: make a model folder's tokenizer put BOS before a text, as packing puts it (the
  previous document's EOS, the same token) before a document;
- `encode_for_classification`: truncated token ids plus integer labels; string labels are mapped to ids in sorted
  order and returned as `label_names` (the config's `id2label`).

    from gptforge.training.encoding import pack_for_causal_lm
    blocks = pack_for_causal_lm(raw, tokenizer, block_size=256)
"""

import os
from itertools import chain
from typing import Any

import datasets
import torch

from .corpus import LABEL_COLUMN, TEXT_COLUMN
from .errors import UsageError
from .sources import CONTINUES_COLUMN, mapped_files, releasing_pages


def default_num_proc(rows: int) -> int:
    # The Rust tokenizer already encodes a batch on every core; processes pay off only for many rows.
    return min(os.cpu_count() or 1, 8) if rows >= 256 else 1


def batch_rows(part: datasets.Dataset, target_bytes: int = 4 << 20) -> int:
    """Rows per `map` batch so that a batch holds about `target_bytes` of text: a worker's memory stays flat
    whether rows are tweets or 64 KB chunks of a book."""
    # the underlying table's mean: a `select`ed or filtered dataset still points at every row of it
    mean = part.data.nbytes / max(part.data.num_rows, 1)
    return int(min(1000, max(8, target_bytes // max(mean, 1))))


def packer(tokenizer: Any, block_size: int, text_column: str = TEXT_COLUMN) -> Any:
    """The batched `map` function that tokenises rows and cuts their token stream into `block_size` blocks.

    EOS closes every document: every row, except a row whose `continues` column says the next row carries on the
    same document (text files read in pieces). A batch's last partial block is dropped, as Transformers'
    `run_clm.py` does.

    The packer alone places the special tokens of a block: it encodes without the tokenizer's own
    (`add_special_tokens=False`), so a tokenizer that prepends BOS (`start_documents_with_bos`) packs the same
    blocks as one that does not. With BOS and EOS the same token, the EOS closing a document is the BOS the next
    one starts after.
    """
    eos = tokenizer.eos_token_id

    def pack(batch: dict[str, list]) -> dict[str, list]:
        # verbose=False: whole documents are longer than model_max_length by design (they get packed)
        ids = tokenizer(batch[text_column], add_special_tokens=False, verbose=False)["input_ids"]
        continues = batch.get(CONTINUES_COLUMN) or [False] * len(ids)
        stream: list[int] = []
        for row, goes_on in zip(ids, continues, strict=True):
            stream.extend(row)
            if not goes_on:
                stream.append(eos)
        usable = len(stream) // block_size * block_size
        return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}

    return pack


def start_documents_with_bos(tokenizer: Any) -> bool:
    """Make `tokenizer(text)` start with BOS, as the packer starts documents, when BOS is the EOS it closes them with.

    A model folder then says how its model saw text: `tokenizer(prompt)`, and with it `model.generate`, pipelines,
    lm-eval and `gptforge generate`, feeds BOS + prompt, as pretraining fed BOS + document. The flag lives in the
    saved tokenizer.json (a `TemplateProcessing` post-processor), so every loader of the folder applies it. A
    tokenizer whose BOS differs from its EOS (or that has none) is left as it is: pretraining never put that BOS
    before a document. Returns whether the tokenizer now prepends BOS.
    """
    from .folders import adds_bos

    if adds_bos(tokenizer):
        return True
    if tokenizer.bos_token_id is None or tokenizer.bos_token_id != tokenizer.eos_token_id:
        return False
    before = getattr(tokenizer, "add_bos_token", False)
    tokenizer.add_bos_token = True
    if adds_bos(tokenizer):
        return True
    tokenizer.add_bos_token = before  # a tokenizer class that keeps no such template: as it was
    return False


BLOCK_FEATURES = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})


def check_packing(tokenizer: Any, block_size: int) -> None:
    if tokenizer.eos_token_id is None:
        raise UsageError("the tokenizer has no eos_token; packing needs one to separate documents")
    if block_size < 2:
        raise UsageError(f"block_size must be at least 2, got {block_size}")


def pack_for_causal_lm(
    dataset: datasets.DatasetDict,
    tokenizer: Any,
    block_size: int,
    text_column: str = TEXT_COLUMN,
    num_proc: int | None = None,
    source: str = "the data",
    cache_files: dict[str, str] | None = None,
) -> datasets.DatasetDict:
    """Tokenise every document, close it with EOS, concatenate and cut into `block_size` blocks (`input_ids`,
    stored as int32).

    One `map` pass per split, over `num_proc` processes (default: every core for 256 rows or more), in batches of
    about 4 MB of text, each process letting go of the source's pages after each batch; `cache_files` names the
    Arrow file each split is written to (else the `datasets` cache). A split with fewer tokens than one block is a
    `UsageError` that gives the token count.
    """
    check_packing(tokenizer, block_size)
    pack = packer(tokenizer, block_size, text_column)
    packed = {}
    for split, part in dataset.items():
        procs = num_proc or default_num_proc(len(part))
        blocks = part.map(
            releasing_pages(pack, mapped_files(part)),
            batched=True,
            batch_size=batch_rows(part),
            remove_columns=part.column_names,
            features=BLOCK_FEATURES,
            num_proc=procs if procs > 1 and len(part) > 1 else None,
            cache_file_name=(cache_files or {}).get(split),
            desc=f"tokenize and pack {split} into blocks of {block_size}",
        )
        if len(blocks) == 0:
            tokens = sum(
                len(ids) + 1 for ids in tokenizer(list(part[text_column]), add_special_tokens=False)["input_ids"]
            )
            raise UsageError(
                f"the {split} split of {source} holds about {tokens} tokens, fewer than one block of "
                f"block_size={block_size}; use a smaller --block-size or more data"
            )
        packed[split] = blocks.with_format("torch")
    return datasets.DatasetDict(packed)


def token_byte_lengths(tokenizer: Any) -> torch.Tensor:
    """The UTF-8 bytes of text each token id stands for (special tokens: none), as an int64 table by id.

    Exact for a byte-level BPE (gptforge's tokenizers): each character of a token is one byte of the byte-level
    alphabet. Another tokenizer's tokens are measured by their decoded text, which can miscount a token that is a
    fragment of a multi-byte character.
    """
    from tokenizers import decoders

    special = set(tokenizer.all_special_ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and isinstance(backend.decoder, decoders.ByteLevel)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    lengths = [
        0
        if i in special or piece is None
        else (len(piece) if byte_level else len(tokenizer.convert_tokens_to_string([piece]).encode("utf-8")))
        for i, piece in enumerate(pieces)
    ]
    return torch.tensor(lengths, dtype=torch.long)


def bytes_per_scored_token(blocks: Any, tokenizer: Any) -> float | None:
    """Mean UTF-8 bytes per token that a causal LM is scored on in `blocks` (every position but each block's first):
    the factor from a validation loss in nats per token to bits per byte. None when the tokens hold no text."""
    table = token_byte_lengths(tokenizer)
    total_bytes, total_tokens = 0, 0
    for first in range(0, len(blocks), 256):
        ids = torch.as_tensor(blocks[first : first + 256]["input_ids"], dtype=torch.long)[:, 1:]
        total_bytes += int(table[ids.clamp(max=len(table) - 1)].sum())
        total_tokens += ids.numel()
    return total_bytes / total_tokens if total_bytes and total_tokens else None


def causal_lm_collator(features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack equal-length blocks; the labels are the inputs (the model shifts them)."""
    input_ids = torch.stack([torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features])
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def label_names_of(dataset: datasets.DatasetDict, label_column: str, source: str) -> list[str]:
    """Class names in id order: a `ClassLabel`'s own names, else the sorted distinct values of every split.

    Fewer than two classes is a `UsageError` naming the class.
    """
    feature = dataset["train"].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        present = set(chain.from_iterable(part.unique(label_column) for part in dataset.values()))
    else:
        values = set(chain.from_iterable(part.unique(label_column) for part in dataset.values()))
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise UsageError(
                f"label column {label_column!r} of {source} mixes value types {sorted(k.__name__ for k in kinds)}"
            )
        names = [str(v) for v in sorted(values)]
        present = set(names)
    if len(present) < 2:
        raise UsageError(
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
    """`input_ids` (truncated to `max_length`) and integer `labels` in `label_names` order.

    Texts are encoded as `tokenizer(text)` encodes them, special tokens included: BOS first when the folder's
    tokenizer prepends it (a pretrained folder's does), so the classifier learns on what its users will feed it and
    sees each text start as pretraining's documents did.
    """
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
