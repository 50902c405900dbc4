"""Export a gptforge folder as a native Transformers folder (`GPT2LMHeadModel` or `LlamaForCausalLM`).

Tools that know only the native architectures (vLLM, llama.cpp's GGUF converter, TGI, ONNX exporters) read the
result without gptforge and without remote code. Only a causal LM whose config maps exactly is exported; anything
else is an error naming each field that does not map. `gptforge convert` brings such folders back in.

Usage:

    gptforge export runs/tiny/final runs/tiny/native --to transformers
    gptforge export runs/tiny/final runs/tiny/model.gguf --to gguf --gguf-type q8_0   # llama.cpp (gptforge.export_gguf)

The tokenizer goes along: `tokenizer.json` byte for byte, and a `tokenizer_config.json` that declares the generic
`PreTrainedTokenizerFast` without `auto_map`. The output is deterministic: exporting the same folder twice, or the
folder `gptforge convert` makes of an export, gives byte-identical files.
"""

import argparse
import json
import sys
from pathlib import Path

from transformers import PreTrainedModel

from gptforge.configuration import GPTForgeConfig
from gptforge.export_gguf import GGUF_TYPES, export_gguf
from gptforge.modeling import GPTForgeForCausalLM
from gptforge.modeling.conversion import gptforge_config_to_native, to_transformers
from gptforge.training.folders import TOKENIZER_COPY_FILES, copy_present

HELP = "export a gptforge folder as a native GPT2LMHeadModel / LlamaForCausalLM folder, or a GGUF file"
TARGETS = ("transformers", "gguf")
NATIVE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # concrete in 4.x too (5.x's `TokenizersBackend` is 5.x-only)
NATIVE_MODEL_INPUTS = ("input_ids", "attention_mask")
# load-time bookkeeping that Transformers 5.24 writes back into a re-saved tokenizer_config.json; not tokenizer settings
LOAD_TIME_KEYS = ("is_local", "local_files_only", "name_or_path", "_commit_hash")


def export_tokenizer(folder: Path, out: Path) -> list[Path]:
    """Copy the tokenizer of `folder` into `out` as a plain `PreTrainedTokenizerFast` (no remote code)."""
    written = copy_present(folder, out, TOKENIZER_COPY_FILES)
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        tokenizer_config = json.loads(config_file.read_text(encoding="utf-8"))
        for key in ("auto_map", *LOAD_TIME_KEYS):
            tokenizer_config.pop(key, None)
        tokenizer_config["tokenizer_class"] = NATIVE_TOKENIZER_CLASS
        # Transformers 4.x's PreTrainedTokenizerFast otherwise also returns token_type_ids, which Llama's and GPT-2's
        # `generate` reject there; 5.x returns these two already
        tokenizer_config.setdefault("model_input_names", list(NATIVE_MODEL_INPUTS))
        text = json.dumps(tokenizer_config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (out / config_file.name).write_text(text, encoding="utf-8")
        written.append(out / config_file.name)
    return written


def main(
    folder: str | Path, out: str | Path, to: str = "transformers", gguf_type: str = "f16"
) -> PreTrainedModel | Path:
    """Write the native equivalent of the gptforge model in `folder` to `out`; returns the native model.

    Raises `ValueError` for an unknown target, a non-causal-LM folder, a config without an exact native counterpart
    (naming each field that does not map), or a non-empty `out`.
    """
    if to not in TARGETS:
        raise ValueError(f"unknown export target {to!r}; expected one of {TARGETS}")
    if to == "gguf":  # OUT is a .gguf file; see gptforge.export_gguf
        return export_gguf(folder, out, gguf_type)
    folder, out = Path(folder), Path(out)
    config = GPTForgeConfig.from_pretrained(folder)
    architecture = (config.architectures or [GPTForgeForCausalLM.__name__])[0]
    if architecture != GPTForgeForCausalLM.__name__:
        raise ValueError(
            f"{folder} holds a {architecture}; only {GPTForgeForCausalLM.__name__} has a native GPT-2 / Llama "
            "counterpart"
        )
    gptforge_config_to_native(config)  # fails here, naming every field that does not map, before loading weights
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder {out} exists and is not empty")
    model = GPTForgeForCausalLM.from_pretrained(folder, dtype="auto")
    native = to_transformers(model)
    native.save_pretrained(out)
    export_tokenizer(folder, out)
    return native


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="gptforge model folder (config.json + model.safetensors)")
    parser.add_argument("out", help="output folder for the native model; must not exist or be empty")
    parser.add_argument(
        "--to", choices=TARGETS, default="transformers", help="target: a native Transformers folder, or a GGUF file"
    )
    parser.add_argument("--gguf-type", choices=GGUF_TYPES, default="f16", help="GGUF weight type (--to gguf)")


def run(args: argparse.Namespace) -> int:
    try:
        native = main(args.folder, args.out, to=args.to, gguf_type=args.gguf_type)
    except ValueError as error:
        print(f"gptforge export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}" if args.to == "gguf" else f"wrote {type(native).__name__} to {args.out}")
    return 0
