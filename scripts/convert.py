"""Convert a native Transformers GPT-2, Llama or Qwen3 folder into a gptforge folder, tokenizer included.

The weights go through `gptforge.from_transformers` (an explicit name map with shape and coverage checks); the
converted model's logits are then compared with the source's on a random batch, so a silent mismatch cannot ship.
The output loads with `AutoModelForCausalLM.from_pretrained(OUT)` once `gptforge` is imported, and can be
fine-tuned (`gptforge finetune --model OUT`) or evaluated like any gptforge folder.

Usage:
    gptforge convert path/to/gpt2 runs/gpt2-gptforge
    gptforge convert path/to/llama runs/llama-gptforge --no-verify
    gptforge convert --source path/to/gpt2 --out runs/gpt2-gptforge        # the same, as flags
"""

import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from ..training.errors import UsageError
from ..training.options import option, typed_main

HELP = "convert a native GPT-2, Llama or Qwen3 folder (Transformers format) into a gptforge folder"


@dataclass
class ConvertOptions:
    """Every flag of `gptforge convert`, and the keywords of `main`."""

    source: str | os.PathLike = option(
        help="native GPT-2, Llama or Qwen3 folder (config.json + safetensors)",
        positional=True,
        flags=["--source"],
        metavar="SOURCE",
    )
    output_dir: str | os.PathLike = option(
        help="gptforge folder to write", positional=True, flags=["--out", "--output-dir"], metavar="OUT"
    )
    _: KW_ONLY
    verify: bool = option(True, "skip the logits comparison with the source", flags=["--no-verify"])
    seed: int = option(0, "seeds the verification batch")


@typed_main(ConvertOptions)
def main(options: ConvertOptions) -> dict[str, Any]:
    """Convert and save; return `{"output_dir", "source_model_type", "num_parameters", "max_abs_logit_diff"}`.

    Verification runs the two models on the same random tokens: conversion is exact, so anything above float
    rounding (1e-4 in fp32) is a bug and raises.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..modeling.conversion import from_transformers
    from ..training.folders import SUPPORTED_MODEL_TYPES, TOKENIZER_COPY_FILES, copy_present, source_model_type

    model_type = source_model_type(options.source)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UsageError(
            f"{str(options.source)!r} holds a {model_type!r} model; convert reads {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(a gptforge folder needs no conversion)"
        )
    native = AutoModelForCausalLM.from_pretrained(options.source).eval()
    converted = from_transformers(native).eval()

    max_diff = None
    if options.verify:
        generator = torch.Generator().manual_seed(options.seed)
        length = min(16, converted.config.max_position_embeddings)
        input_ids = torch.randint(0, converted.config.vocab_size, (2, length), generator=generator)
        with torch.no_grad():
            expected = native(input_ids=input_ids).logits.float()
            got = converted(input_ids=input_ids).logits.float()
        max_diff = (expected - got).abs().max().item()
        tolerance = 1e-4 if native.dtype == torch.float32 else 5e-2
        if max_diff > tolerance:
            raise RuntimeError(
                f"converted logits differ from the source's by {max_diff:.3g} (tolerance {tolerance}); "
                "the conversion is wrong for this checkpoint"
            )

    out = Path(options.output_dir)
    converted.save_pretrained(out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(options.source)
    except (OSError, ValueError) as exc:
        tokenizer = None
        print(f"warning: no tokenizer could be loaded from {str(options.source)!r} ({exc}); copy one into {out}")
    if tokenizer is not None and (Path(options.source) / "tokenizer.json").is_file():
        # byte for byte: a load + save folds load-time state back in (a padding section in tokenizer.json comes back
        # as padding keys in tokenizer_config.json), so `export` -> `convert` -> `export` would change bytes
        copy_present(Path(options.source), out, (*TOKENIZER_COPY_FILES, "tokenizer_config.json"))
    elif tokenizer is not None:  # vocab.json + merges.txt only, or a Hub id: Transformers writes tokenizer.json
        tokenizer.save_pretrained(out)

    summary = {
        "output_dir": str(out),
        "source_model_type": model_type,
        "num_parameters": converted.num_parameters(),
        "max_abs_logit_diff": max_diff,
        "tokenizer": tokenizer is not None,
    }
    print(
        f"converted {model_type} ({summary['num_parameters'] / 1e6:.2f}M parameters) into {out}"
        + (f"; max |logit difference| {max_diff:.2e}" if max_diff is not None else "")
    )
    return summary
