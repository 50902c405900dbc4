"""Packed blocks prepared once and reused: memory-mapped Arrow shards keyed by data, tokenizer and block size.

Tokenising a large corpus takes minutes; reading the blocks back takes a moment. `prepare_blocks` writes each
split's blocks (one shard per process) into `CACHE/gptforge-blocks/KEY/`, where KEY hashes a fingerprint of the
source (file paths, sizes and modification times, or the Hub id, plus the settings that shape its rows), the
tokenizer's full definition and the block size; `find_prepared` opens them again without reading the source. A
folder appears under its key only once complete (written beside it, then renamed), so an interrupted preparation
is never taken for a finished one, and under `torchrun` the other processes find what the main one wrote.

    found = find_prepared(cache_dir, stamp, tokenizer, block_size) or prepare_blocks(cache_dir, stamp, loaded, ...)
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .encoding import pack_for_causal_lm
from .sources import LoadedData

# bump when the layout of the blocks changes, so older folders are not read as current ones
FORMAT = 1
META = "blocks.json"


@dataclass
class PreparedBlocks:
    blocks: datasets.DatasetDict  # train (+ validation) blocks of `input_ids`, torch-formatted
    folder: Path
    held_out: str | None  # what was held out for validation when the source had no validation split
    reused: bool  # True: read back from an earlier preparation, nothing tokenised


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "gptforge-blocks"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides the ids: vocabulary, merges, normalisation, pre-tokenisation, EOS."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(f"{definition}\n{tokenizer.eos_token_id}".encode()).hexdigest()


def blocks_folder(cache_dir: str | os.PathLike | None, source_stamp: str, tokenizer: Any, block_size: int) -> Path:
    key = hashlib.sha256(
        json.dumps([FORMAT, source_stamp, tokenizer_fingerprint(tokenizer), block_size]).encode()
    ).hexdigest()[:24]
    return cache_root(cache_dir) / key


def _open(folder: Path, reused: bool) -> PreparedBlocks:
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    blocks = {}
    for split, names in meta["files"].items():
        shards = [datasets.Dataset.from_file(str(folder / name)) for name in names]
        blocks[split] = (shards[0] if len(shards) == 1 else datasets.concatenate_datasets(shards)).with_format("torch")
    return PreparedBlocks(datasets.DatasetDict(blocks), folder, meta.get("held_out"), reused)


def find_prepared(
    cache_dir: str | os.PathLike | None, source_stamp: str, tokenizer: Any, block_size: int
) -> PreparedBlocks | None:
    """The blocks an earlier run prepared from the same source, tokenizer and block size; None when there are none."""
    folder = blocks_folder(cache_dir, source_stamp, tokenizer, block_size)
    return _open(folder, reused=True) if (folder / META).is_file() else None


def prepare_blocks(
    cache_dir: str | os.PathLike | None,
    source_stamp: str,
    loaded: LoadedData,
    tokenizer: Any,
    block_size: int,
    text_column: str,
    num_proc: int | None = None,
) -> PreparedBlocks:
    """Tokenise and pack `loaded` into the cache folder of its key, and open the result memory-mapped."""
    folder = blocks_folder(cache_dir, source_stamp, tokenizer, block_size)
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        packed = pack_for_causal_lm(
            loaded.dataset,
            tokenizer,
            block_size,
            text_column,
            num_proc=num_proc,
            source=loaded.source,
            cache_files={split: str(staging / f"{split}.arrow") for split in loaded.dataset},
        )
        files = {split: sorted(p.name for p in staging.glob(f"{split}*.arrow")) for split in packed}
        meta = {
            "format": FORMAT,
            "files": files,
            "blocks": {split: len(part) for split, part in packed.items()},
            "block_size": block_size,
            "source": loaded.source,
            "held_out": loaded.held_out,
        }
        (staging / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        del packed
        try:
            os.replace(staging, folder)
        except OSError:  # another process finished the same preparation first: keep its folder
            if not (folder / META).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _open(folder, reused=False)
