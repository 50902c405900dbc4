"""Perplexity of a model folder on a data source, with a sliding window over texts longer than the context.

Each document is scored on its own, starting after a BOS token (as documents start after `<|endoftext|>` in
pretraining). A document longer than `--block-size` is read in windows that advance by `--stride` tokens; each
window scores only the tokens the previous one did not, with up to `block_size - stride` tokens of context before
them (the Hugging Face perplexity recipe). Perplexity is exp(total negative log-likelihood / scored tokens).

Usage:
    gptforge evaluate --model runs/demo/pretrain/final                       # stdlib validation split
    gptforge evaluate --model runs/x/final --data notes.txt --block-size 512 --stride 256
    gptforge evaluate --model runs/x/final --data corpus/ --split train --max-documents 100
"""

import math
import os
from dataclasses import KW_ONLY, dataclass
from typing import Any

from ..training.errors import UsageError
from ..training.options import DataOptions, option, typed_main

HELP = "perplexity of a model folder on a data source (sliding window over long texts)"


def windows(length: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position) of each window over positions 0..length-1.

    Position 0 (the BOS) is context only; every later position is scored exactly once, by the first window that
    contains it, with as much left context as fits.
    """
    spans = []
    scored_until = 1  # next position that still needs a score
    start = 0
    while scored_until < length:
        end = min(start + block_size, length)
        spans.append((start, end, scored_until))
        scored_until = end
        # keep at least one context token, so the first new position has a prediction inside the window
        start = min(start + stride, end - 1)
    return spans


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

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from ..training import encoding, sources
    from ..training.config import check_block_size
    from ..training.folders import load_tokenizer

    tokenizer = load_tokenizer(options.model)
    net = AutoModelForCausalLM.from_pretrained(options.model).eval()
    block_size = options.block_size or min(net.config.max_position_embeddings, 1024)
    check_block_size(block_size, net.config)
    stride = options.stride or max(1, block_size // 2)
    if not 0 < stride <= block_size:
        raise UsageError(f"--stride must be in (0, block_size={block_size}], got {stride}")

    loaded = sources.load_data(options.data, text_column=options.text_column, **options.source_kwargs(options.seed))
    raw, source = loaded.dataset, loaded.source
    if options.split not in raw:
        raise UsageError(f"no {options.split!r} split in {source}; splits: {', '.join(sorted(raw))}")
    if options.split == "validation" and loaded.held_out:
        print(loaded.held_out)
    texts = list(encoding.subsample(raw[options.split], options.max_documents, options.seed)[options.text_column])

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    documents = [bos + ids for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    # Every window of every document, then batched by similar length so padding stays small.
    pieces = [(doc, span) for doc in documents for span in windows(len(doc), block_size, stride)]
    pieces.sort(key=lambda piece: piece[1][1] - piece[1][0])

    total_nll, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id
    for first in range(0, len(pieces), options.batch_size):
        batch = pieces[first : first + options.batch_size]
        width = max(end - start for _, (start, end, _) in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (doc, (start, end, scored_from)) in enumerate(batch):
            ids = torch.tensor(doc[start:end])
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
            targets[row, scored_from - start : len(ids)] = ids[scored_from - start :]
        with torch.no_grad():
            logits = net(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        # position t predicts token t + 1
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets[:, 1:].reshape(-1), reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += int((targets[:, 1:] != -100).sum())

    if total_tokens == 0:
        raise ValueError(f"the {options.split} split of {source} has no tokens to score")
    loss = total_nll / total_tokens
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    summary = {
        "perplexity": math.exp(loss),
        "loss": loss,
        "tokens": total_tokens,
        "documents": len(texts),
        "bytes_per_token": n_bytes / total_tokens,
        # nats/token -> bits/byte: comparable across tokenizers
        "bits_per_byte": total_nll / math.log(2) / n_bytes,
        "block_size": block_size,
        "stride": stride,
        "held_out": loaded.held_out,
    }
    print(
        f"{options.split} perplexity {summary['perplexity']:.3f} (loss {loss:.4f} nats/token, "
        f"{summary['bits_per_byte']:.3f} bits/byte) over {total_tokens:,} tokens in {len(texts)} documents of "
        f"{source}; window {block_size}, stride {stride}"
    )
    return summary
