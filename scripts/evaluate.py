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

import argparse
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from . import data as data_lib
from .pretrain import check_block_size, load_tokenizer

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


def main(
    model: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    data_config: str | None = None,
    text_column: str = data_lib.TEXT_COLUMN,
    sample_by: str = "document",
    validation_split: float = data_lib.DEFAULT_VALIDATION_SPLIT,
    max_files: int | None = None,
    split: str = "validation",
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
    max_documents: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Return `{"perplexity", "loss", "tokens", "documents", "bytes_per_token"}` on the chosen split.

    The default split is the held-out one (the same split `pretrain` validated on, for the same data and seed).
    """
    if not os.path.isdir(model):
        raise FileNotFoundError(f"no model folder at {str(model)!r}")
    tokenizer = load_tokenizer(model)
    net = AutoModelForCausalLM.from_pretrained(model).eval()
    block_size = block_size or min(net.config.max_position_embeddings, 1024)
    check_block_size(block_size, net.config)
    stride = stride or max(1, block_size // 2)
    if not 0 < stride <= block_size:
        raise ValueError(f"stride must be in (0, block_size={block_size}], got {stride}")

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
    if split not in raw:
        raise ValueError(f"no {split!r} split in {source}; splits: {sorted(raw)}")
    texts = list(data_lib.subsample(raw[split], max_documents, seed)[text_column])

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    documents = [bos + ids for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    # Every window of every document, then batched by similar length so padding stays small.
    pieces = [(doc, span) for doc in documents for span in windows(len(doc), block_size, stride)]
    pieces.sort(key=lambda piece: piece[1][1] - piece[1][0])

    total_nll, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id
    for first in range(0, len(pieces), batch_size):
        batch = pieces[first : first + batch_size]
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
        raise ValueError(f"the {split} split of {source} has no tokens to score")
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
    }
    print(
        f"{split} perplexity {summary['perplexity']:.3f} (loss {loss:.4f} nats/token, "
        f"{summary['bits_per_byte']:.3f} bits/byte) over {total_tokens:,} tokens in {len(texts)} documents of "
        f"{source}; window {block_size}, stride {stride}"
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder")
    data_lib.add_data_arguments(parser, tokenize=False)
    parser.add_argument("--split", default="validation", help="split to score (default: the held-out one)")
    parser.add_argument(
        "--block-size", type=int, default=None, help="window length (default: the model's positions, at most 1024)"
    )
    parser.add_argument("--stride", type=int, default=None, help="window step (default: half the window)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--max-documents", type=int, default=None, help="score a seeded subset of documents")
    parser.add_argument("--seed", type=int, default=0, help="seeds the held-out split and the subset")


def run(args: argparse.Namespace) -> int:
    main(
        args.model,
        **data_lib.data_arguments(args),
        split=args.split,
        block_size=args.block_size,
        stride=args.stride,
        batch_size=args.batch_size,
        max_documents=args.max_documents,
        seed=args.seed,
    )
    return 0
