"""Packed blocks prepared once and reused: memory-mapped Arrow shards keyed by data, tokenizer and block size.

Tokenising a large corpus takes minutes; reading the blocks back takes a moment. `prepare_blocks` writes each
split's blocks (one shard per process) into `CACHE/gptforge-blocks/KEY/`, where KEY hashes a fingerprint of the
source (file paths, sizes and modification times, or the Hub id, plus the settings that shape its rows), the
tokenizer's full definition and the block size; `find_prepared` opens them again without reading the source. A
folder appears under its key only once complete (written beside it, then renamed), so an interrupted preparation
is never taken for a finished one, and under `torchrun` the other processes find what the main one wrote.

    found = find_prepared(cache_dir, stamp, tokenizer, block_size) or prepare_blocks(cache_dir, stamp, loaded, ...)
"""

import copy
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from . import encoding, sources
from .encoding import pack_for_causal_lm
from .errors import UsageError
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
    """A hash of everything that decides the packed ids: vocabulary, merges, normalisation, pre-tokenisation, EOS.

    Not the post-processor (which special tokens `tokenizer(text)` adds): packing encodes without them, so the same
    vocabulary shares its blocks with or without BOS prepended (a run resumed with its checkpoint's tokenizer, which
    prepends BOS, finds the blocks packed with the `--tokenizer` the run started from).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        from tokenizers import processors

        backend = copy.deepcopy(backend)
        # the template of a tokenizer that adds nothing (as `train_tokenizer` makes them by default): such a
        # tokenizer keeps the key its blocks were prepared under
        backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
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


# --------------------------------------------------------------------------------------------------------------------
# what `gptforge pretrain` trains on: prepared (and reused) blocks, or a stream packed on the fly
# --------------------------------------------------------------------------------------------------------------------


def train_own_tokenizer(texts: Any, options: Any, own_tokenizer: Path, model_config: Any, source: str):
    """Train the run's tokenizer on `texts` and save it in OUT/tokenizer."""
    from ..tokenization import train_tokenizer

    vocab = options.tokenizer_vocab_size or model_config.vocab_size
    print(f"training a {vocab}-token tokenizer on the training split of {source}")
    if isinstance(texts, datasets.Dataset):  # in batches, letting go of each batch's pages (a corpus can be large)
        column, files = options.text_column, sources.mapped_files(texts)
        texts = (
            sources.releasing_pages(lambda rows: rows[column], files)(batch)
            for batch in texts.select_columns([column]).iter(batch_size=1000)
        )
    tok = train_tokenizer(texts, vocab, text_column=options.text_column)
    own_tokenizer.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(own_tokenizer)
    return tok


def prepared_blocks(options: Any, tok: Any, own_tokenizer: Path, model_config: Any):
    """(train blocks, validation blocks, what was held out, tokenizer): read back from the blocks an earlier run
    prepared from the same data, tokenizer and block size, or loaded, tokenised and packed now (and kept)."""
    stamp = sources.source_stamp(options.data, text_column=options.text_column, **options.source_kwargs(options.seed))
    found = find_prepared(options.cache_dir, stamp, tok, options.block_size) if tok is not None else None
    if found is None:
        loaded = sources.load_data(
            options.data, text_column=options.text_column, **options.source_kwargs(options.seed)
        )
        if tok is None:
            tok = train_own_tokenizer(loaded.dataset["train"], options, own_tokenizer, model_config, loaded.source)
        found = find_prepared(options.cache_dir, stamp, tok, options.block_size)
        if found is None:
            found = prepare_blocks(
                options.cache_dir, stamp, loaded, tok, options.block_size, options.text_column, options.num_proc
            )
            print(
                f"tokenised and packed {sources.describe_source(options.data)} into {found.folder} (reused next time)"
            )
    if found.reused:
        print(f"reusing the blocks prepared earlier from the same data, tokenizer and block size: {found.folder}")
    eval_blocks = encoding.subsample(found.blocks["validation"], options.max_eval_blocks, options.seed)
    return found.blocks["train"], eval_blocks, found.held_out, tok


# rows the tokenizer trains on when the data is streamed and no --tokenizer is given
STREAM_TOKENIZER_ROWS = 2000


def streamed_blocks(options: Any, tok: Any, own_tokenizer: Path, model_config: Any):
    """(train stream, validation blocks, what was held out, tokenizer) for `--streaming`: blocks packed on the fly.

    Without a validation split, the first `--max-eval-blocks` blocks of the packed stream are held out (the head,
    not the tail: a stream's end is not known in advance).
    """
    import datasets

    source = sources.describe_source(options.data)
    if options.data is None:
        raise UsageError("--streaming reads a --data source; the default corpus is small enough to prepare")
    raw = sources.read_raw(
        options.data,
        data_config=options.data_config,
        sample_by=options.sample_by,
        encoding_errors=options.encoding_errors,
        cache_dir=options.cache_dir,
        streaming=True,
    )
    if "train" not in raw:
        raise UsageError(f"{source} has no train split; its splits are {sorted(raw)}")
    columns = raw["train"].column_names
    if columns is not None and options.text_column not in columns:
        raise UsageError(
            f"column {options.text_column!r} not found in the train split of {source}; "
            f"available columns: {', '.join(columns)}"
        )
    if tok is None:
        tok = train_own_tokenizer(
            raw["train"].take(STREAM_TOKENIZER_ROWS), options, own_tokenizer, model_config, source
        )
    encoding.check_packing(tok, options.block_size)
    pack = encoding.packer(tok, options.block_size, options.text_column)

    def packed(part: Any) -> Any:
        part = part.filter(lambda row: bool((row[options.text_column] or "").strip()))
        return part.map(pack, batched=True, batch_size=64, remove_columns=part.column_names)

    validation = next((raw[name] for name in ("validation", "valid", "dev", "test") if name in raw), None)
    eval_count = options.max_eval_blocks or 256
    train = packed(raw["train"])
    held_out = None
    if validation is None:
        validation = raw["train"]
        train = train.skip(eval_count)
        held_out = f"held out the first {eval_count} blocks of the packed stream of {source} for validation"
    eval_rows = list(packed(validation).take(eval_count))
    if not eval_rows:
        raise UsageError(
            f"{source} holds less than one block of block_size={options.block_size} tokens to validate on"
        )
    eval_blocks = datasets.Dataset.from_list(eval_rows, features=encoding.BLOCK_FEATURES).with_format("torch")
    return train, eval_blocks, held_out, tok
