"""Perplexity of a causal LM on texts, with a sliding window over texts longer than the context.

Each document is scored on its own, starting after a BOS token (as documents start after `<|endoftext|>` in
pretraining). A document longer than the window is read in windows that advance by `stride` tokens; each window
scores only the tokens the previous one did not, with up to `block_size - stride` tokens of context before them (the
Hugging Face perplexity recipe). Perplexity is exp(total negative log-likelihood / scored tokens).
"""

import math
from typing import Any

import torch
import torch.nn.functional as F

from .config import check_block_size
from .errors import UsageError


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


def window_sizes(config: Any, block_size: int | None, stride: int | None) -> tuple[int, int]:
    """The window length (default: the model's positions, at most 1024) and step (default: half the window);
    `UsageError` when the window exceeds the model's positions or the step is not in (0, window]."""
    block_size = block_size or min(config.max_position_embeddings, 1024)
    check_block_size(block_size, config)
    stride = stride or max(1, block_size // 2)
    if not 0 < stride <= block_size:
        raise UsageError(f"--stride must be in (0, block_size={block_size}], got {stride}")
    return block_size, stride


def perplexity_of_texts(
    model: Any, tokenizer: Any, texts: list[str], block_size: int, stride: int, batch_size: int, what: str
) -> dict[str, Any]:
    """`{"perplexity", "loss", "tokens", "documents", "bytes_per_token", "bits_per_byte"}` of `model` on `texts`,
    each text a document (see the module docstring). `what` names the texts in the error raised when they hold no
    token to score."""
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
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        # position t predicts token t + 1
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets[:, 1:].reshape(-1), reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += int((targets[:, 1:] != -100).sum())

    if total_tokens == 0:
        raise ValueError(f"{what} has no tokens to score")
    loss = total_nll / total_tokens
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "perplexity": math.exp(loss),
        "loss": loss,
        "tokens": total_tokens,
        "documents": len(texts),
        "bytes_per_token": n_bytes / total_tokens,
        # nats/token -> bits/byte: comparable across tokenizers
        "bits_per_byte": total_nll / math.log(2) / n_bytes,
    }
