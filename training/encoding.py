"""How texts become model inputs: packed causal-LM blocks, or truncated classification examples.

- `pack_for_causal_lm`: tokenise with `datasets.map` (cached next to the data, optionally multi-process) and pack
  into fixed-length blocks, with EOS closing every document;
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


def default_num_proc(rows: int) -> int:
    # The Rust tokenizer already encodes a batch on every core; processes pay off only for many rows.
    return min(os.cpu_count() or 1, 8) if rows >= 1000 else 1


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
