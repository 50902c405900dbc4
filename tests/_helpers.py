"""Test helpers shared by the test modules (import as `from _helpers import ...`; tests/ is on sys.path)."""

import json
from pathlib import Path

import torch

from gptforge import GPTForgeConfig


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line, as `datasets`' json loader reads them."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def tiny_config(preset: str = "tiny", **overrides) -> GPTForgeConfig:
    """A preset shrunk to test size (hidden 64, 2 layers, vocab 128) unless overridden."""
    sizes = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=128, max_position_embeddings=64
    )
    if preset == "tiny":
        sizes.update(num_attention_heads=4, num_key_value_heads=2)
    else:
        sizes.update(num_attention_heads=4)
    return GPTForgeConfig.from_preset(preset, **{**sizes, **overrides})


# the four shapes of the architecture every behavioural test runs over
ARCHITECTURES = {
    "llama": dict(preset="tiny"),
    "gpt2": dict(preset="gpt2-124m", attention_dropout=0.0, hidden_dropout=0.0, embedding_dropout=0.0),
    "mqa-headdim": dict(preset="tiny", num_key_value_heads=1, head_dim=32),
    "postnorm-causal": dict(preset="encoder", is_causal=True, attention_dropout=0.0, hidden_dropout=0.0),
}


def arch_config(name: str, **overrides) -> GPTForgeConfig:
    spec = dict(ARCHITECTURES[name])
    preset = spec.pop("preset")
    return tiny_config(preset, **{**spec, **overrides})


def left_padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` of token ids as one left-padded batch: (input_ids padded with 0, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return ids, mask
