"""The model config a run trains: a preset or a config JSON, `--set` overrides, and the tokenizer's vocabulary."""

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..configuration import GPTForgeConfig
from .errors import UsageError


def config_fields() -> set[str]:
    """The names `--set` accepts: the config's fields and their aliases."""
    return {f.name for f in fields(GPTForgeConfig)} | set(GPTForgeConfig.attribute_map)


def parse_overrides(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """`["hidden_size=64", "is_causal=false"]` -> `{"hidden_size": 64, "is_causal": False}`.

    Values are read as JSON (numbers, true/false/null, lists, objects) and otherwise kept as strings; Python's
    True/False/None spellings are accepted too. Unknown field names are a `ValueError` (a typo would otherwise be
    stored silently on the config).
    """
    if items is None:
        return {}
    if isinstance(items, dict):
        pairs = dict(items)
    else:
        pairs = {}
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--set expects field=value, got {item!r}")
            raw = raw.strip()
            python_literals = {"True": True, "False": False, "None": None}
            value: Any
            if raw in python_literals:
                value = python_literals[raw]
            else:
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError:
                    value = raw
            pairs[key.strip()] = value
    unknown = sorted(set(pairs) - config_fields())
    if unknown:
        raise UsageError(f"unknown config field(s) {unknown}; GPTForgeConfig fields: {sorted(config_fields())}")
    return pairs


def build_config(
    preset: str | None = "tiny", config: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> GPTForgeConfig:
    """A config from a preset or a config JSON (file, or a folder holding config.json), with overrides applied."""
    overrides = dict(overrides or {})
    if config is not None:
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise UsageError(f"no config JSON at {str(path)!r}: pass a config.json file or a folder holding one")
        values = json.loads(path.read_text())
        values.pop("model_type", None)
        return GPTForgeConfig.from_dict({**values, **overrides})
    return GPTForgeConfig.from_preset(preset or "tiny", **overrides)


def apply_tokenizer(config: GPTForgeConfig, tokenizer: Any, explicit_vocab: int | None) -> None:
    """Vocabulary size and special-token ids from the tokenizer (a larger explicit vocab_size is kept: padding)."""
    size = len(tokenizer)
    if explicit_vocab is not None and explicit_vocab < size:
        raise UsageError(f"vocab_size={explicit_vocab} is smaller than the tokenizer's {size} tokens")
    config.vocab_size = explicit_vocab or size
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def check_block_size(block_size: int, config: Any, name: str = "block_size") -> None:
    """A sequence longer than the model's positions fails before any data is tokenised."""
    limit = config.max_position_embeddings
    if block_size > limit:
        flag = "--" + name.replace("_", "-")
        raise UsageError(
            f"{name}={block_size} is larger than the model's max_position_embeddings={limit}; "
            f"use {flag} {limit} or less (or --set max_position_embeddings={block_size} for a new model)"
        )
