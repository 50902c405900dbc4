"""Perplexity of a model folder on a data source, with a sliding window over texts longer than the context.

The scoring (`training/evaluation.py`): each document on its own after a BOS token; a document longer than
`--block-size` in windows that advance by `--stride` tokens, each scoring only the tokens the previous one did not.

Usage:
    gptforge evaluate --model runs/demo/pretrain/final                       # stdlib validation split
    gptforge evaluate --model runs/x/final --data notes.txt --block-size 512 --stride 256
    gptforge evaluate --model runs/x/final --data corpus/ --split train --max-documents 100
"""

import os
from dataclasses import KW_ONLY, dataclass
from typing import Any

from ..training.errors import UsageError
from ..training.options import DataOptions, option, typed_main

HELP = "perplexity of a model folder on a data source (sliding window over long texts)"


@dataclass
class EvaluateOptions(DataOptions):
    """Every flag of `gptforge evaluate`, and the keywords of `main`."""

    model: str | os.PathLike = option(help="model folder")
    _: KW_ONLY
    split: str = option("validation", "split to score (default: the held-out one)")
    block_size: int | None = option(None, "window length (default: the model's positions, at most 1024)")
    stride: int | None = option(None, "window step (default: half the window)")
    batch_size: int = option(16, "windows per forward pass")
    max_documents: int | None = option(None, "score a seeded subset of documents")
    seed: int = option(0, "seeds the held-out split and the subset")


@typed_main(EvaluateOptions)
def main(options: EvaluateOptions) -> dict[str, Any]:
    """Return `{"perplexity", "loss", "tokens", "documents", "bytes_per_token"}` on the chosen split.

    The default split is the held-out one (the same split `pretrain` validated on, for the same data and seed).
    """
    if not os.path.isdir(options.model):
        raise UsageError(f"no model folder at {str(options.model)!r}: pass a folder written by save_pretrained")

    from transformers import AutoModelForCausalLM

    from ..training import encoding, sources
    from ..training.evaluation import perplexity_of_texts, window_sizes
    from ..training.folders import load_tokenizer

    tokenizer = load_tokenizer(options.model)
    net = AutoModelForCausalLM.from_pretrained(options.model).eval()
    block_size, stride = window_sizes(net.config, options.block_size, options.stride)

    loaded = sources.load_data(options.data, text_column=options.text_column, **options.source_kwargs(options.seed))
    raw, source = loaded.dataset, loaded.source
    if options.split not in raw:
        raise UsageError(f"no {options.split!r} split in {source}; splits: {', '.join(sorted(raw))}")
    if options.split == "validation" and loaded.held_out:
        print(loaded.held_out)
    texts = list(encoding.subsample(raw[options.split], options.max_documents, options.seed)[options.text_column])
    scores = perplexity_of_texts(
        net, tokenizer, texts, block_size, stride, options.batch_size, what=f"the {options.split} split of {source}"
    )
    summary = {**scores, "block_size": block_size, "stride": stride, "held_out": loaded.held_out}
    print(
        f"{options.split} perplexity {summary['perplexity']:.3f} (loss {summary['loss']:.4f} nats/token, "
        f"{summary['bits_per_byte']:.3f} bits/byte) over {summary['tokens']:,} tokens in {len(texts)} documents of "
        f"{source}; window {block_size}, stride {stride}"
    )
    return summary
