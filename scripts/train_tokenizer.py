"""Train the gptforge byte-level BPE tokenizer on a data source and save it as a Transformers tokenizer folder.

The folder (tokenizer.json + tokenizer_config.json) loads with `AutoTokenizer.from_pretrained(OUT)` and is what
`gptforge pretrain --tokenizer OUT` expects. `<|endoftext|>` is BOS/EOS (id 0), `<|pad|>` the pad token (id 1).
Training reads the train split only; where the source has a validation split, it gives the reported compression
(bytes per token). Nothing is held out when there is none: a tokenizer needs no validation split.

Usage:
    gptforge train-tokenizer --out runs/tok                          # 4096 tokens, on the stdlib corpus
    gptforge train-tokenizer --out runs/tok --data corpus/ --vocab-size 16384 --special-token "<|user|>"
    gptforge train-tokenizer --out runs/tok --data wikitext --data-config wikitext-2-raw-v1   # online only
"""

import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from ..training.options import DataOptions, option, typed_main

HELP = "train the byte-level BPE tokenizer on a data source"


@dataclass
class TrainTokenizerOptions(DataOptions):
    """Every flag of `gptforge train-tokenizer`, and the keywords of `main`."""

    output_dir: str | os.PathLike = option(help="folder to save the tokenizer in", flags=["--out", "--output-dir"])
    _: KW_ONLY
    vocab_size: int = option(4096, "final vocabulary size, special tokens included")
    min_frequency: int = option(2, "a pair must occur this often to be merged")
    special_tokens: list[str] | None = option(
        None, "extra special token (repeatable); <|endoftext|> and <|pad|> are always there", flags=["--special-token"]
    )
    model_max_length: int | None = option(None, "the model's context length, for truncation")
    seed: int = option(0, "seeds the held-out split")


@typed_main(TrainTokenizerOptions)
def main(options: TrainTokenizerOptions) -> dict[str, Any]:
    """Train, save and return `{"output_dir", "vocab_size", "bytes_per_token"}` (None without a validation split).

    Bytes per token on the held-out split is the number that says whether the vocabulary fits the data: it is what
    turns a context length in tokens into one in text.
    """
    from ..tokenization import train_tokenizer
    from ..training import sources

    loaded = sources.load_data(
        options.data, text_column=options.text_column, hold_out=False, **options.source_kwargs(options.seed)
    )
    raw = loaded.dataset
    tokenizer = train_tokenizer(
        raw["train"],
        options.vocab_size,
        text_column=options.text_column,
        min_frequency=options.min_frequency,
        special_tokens=tuple(options.special_tokens or ()),
        model_max_length=options.model_max_length,
    )
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)

    summary: dict[str, Any] = {"output_dir": str(out), "vocab_size": len(tokenizer), "bytes_per_token": None}
    compression = "no validation split to measure compression on"
    if "validation" in raw:
        n_bytes, n_tokens = 0, 0
        for batch in raw["validation"].iter(batch_size=256):
            texts = batch[options.text_column]
            n_bytes += sum(len(t.encode("utf-8")) for t in texts)
            n_tokens += sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
        summary.update(bytes_per_token=n_bytes / max(n_tokens, 1), validation_tokens=n_tokens)
        compression = f"{summary['bytes_per_token']:.2f} bytes/token on the validation split"
    print(
        f"tokenizer: {summary['vocab_size']} tokens, trained on {len(raw['train'])} rows of {loaded.source}; "
        f"{compression}; saved to {out}"
    )
    return summary
