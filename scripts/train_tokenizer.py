"""Train the gptforge byte-level BPE tokenizer on a data source and save it as a Transformers tokenizer folder.

The folder (tokenizer.json + tokenizer_config.json) loads with `AutoTokenizer.from_pretrained(OUT)` and is what
`gptforge pretrain --tokenizer OUT` expects. `<|endoftext|>` is BOS/EOS (id 0), `<|pad|>` the pad token (id 1).
Training reads the train split only; the validation split gives the reported compression (bytes per token).

Usage:
    gptforge train-tokenizer --out runs/tok                          # 4096 tokens, on the stdlib corpus
    gptforge train-tokenizer --out runs/tok --data corpus/ --vocab-size 16384 --special-token "<|user|>"
    gptforge train-tokenizer --out runs/tok --data wikitext --data-config wikitext-2-raw-v1   # online only
"""

import argparse
import os
from pathlib import Path
from typing import Any

from ..tokenization import train_tokenizer
from . import data as data_lib

HELP = "train the byte-level BPE tokenizer on a data source"


def main(
    output_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    data_config: str | None = None,
    text_column: str = data_lib.TEXT_COLUMN,
    sample_by: str = "document",
    validation_split: float = data_lib.DEFAULT_VALIDATION_SPLIT,
    max_files: int | None = None,
    vocab_size: int = 4096,
    min_frequency: int = 2,
    special_tokens: list[str] | None = None,
    model_max_length: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Train, save and return `{"output_dir", "vocab_size", "bytes_per_token"}`.

    Bytes per token on the held-out split is the number that says whether the vocabulary fits the data: it is what
    turns a context length in tokens into one in text.
    """
    source = data_lib.describe_source(data)
    raw = data_lib.load_texts(
        data,
        text_column,
        data_config=data_config,
        validation_split=validation_split,
        sample_by=sample_by,
        seed=seed,
        cache_dir=cache_dir,
        max_files=max_files,
    )
    tokenizer = train_tokenizer(
        raw["train"],
        vocab_size,
        text_column=text_column,
        min_frequency=min_frequency,
        special_tokens=tuple(special_tokens or ()),
        model_max_length=model_max_length,
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)

    texts = list(raw["validation"][text_column])
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
    summary = {
        "output_dir": str(out),
        "vocab_size": len(tokenizer),
        "bytes_per_token": n_bytes / max(n_tokens, 1),
        "validation_tokens": n_tokens,
    }
    print(
        f"tokenizer: {summary['vocab_size']} tokens, trained on {len(raw['train'])} rows of {source}; "
        f"{summary['bytes_per_token']:.2f} bytes/token on the validation split; saved to {out}"
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", "--output-dir", dest="output_dir", required=True, help="folder to save the tokenizer in"
    )
    data_lib.add_data_arguments(parser, tokenize=False)
    # --- vocabulary ---
    parser.add_argument("--vocab-size", type=int, default=4096, help="final vocabulary size, special tokens included")
    parser.add_argument("--min-frequency", type=int, default=2, help="a pair must occur this often to be merged")
    parser.add_argument(
        "--special-token",
        dest="special_tokens",
        action="append",
        default=[],
        help="extra special token (repeatable); <|endoftext|> and <|pad|> are always there",
    )
    parser.add_argument(
        "--model-max-length", type=int, default=None, help="the model's context length, for truncation"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the held-out split")


def run(args: argparse.Namespace) -> int:
    main(
        args.output_dir,
        **data_lib.data_arguments(args),
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        special_tokens=args.special_tokens,
        model_max_length=args.model_max_length,
        seed=args.seed,
    )
    return 0
