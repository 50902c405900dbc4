"""Export a gptforge folder as a native Transformers folder (`GPT2LMHeadModel`, `LlamaForCausalLM` or
`Qwen3ForCausalLM`), or a GGUF file.

Tools that know only the native architectures (vLLM, llama.cpp's GGUF converter, TGI, ONNX exporters) read the
result without gptforge and without remote code. Only a causal LM whose config maps exactly is exported; anything
else is an error naming each field that does not map. `gptforge convert` brings such folders back in.

Usage:

    gptforge export runs/tiny/final runs/tiny/native --to transformers
    gptforge export --source runs/tiny/final --out runs/tiny/native          # the same, as flags
    gptforge export runs/tiny/final runs/tiny/model.gguf --to gguf --gguf-type q8_0   # llama.cpp (gptforge.export_gguf)

The tokenizer goes along: `tokenizer.json` byte for byte, and a `tokenizer_config.json` that declares the generic
`PreTrainedTokenizerFast` without `auto_map`. The output is deterministic: exporting the same folder twice, or the
folder `gptforge convert` makes of an export, gives byte-identical files.
"""

import json
import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Literal

from ..training.errors import UsageError
from ..training.options import option, typed_main

HELP = (
    "export a gptforge folder as a native GPT2LMHeadModel / LlamaForCausalLM / Qwen3ForCausalLM folder, or a GGUF file"
)
TARGETS = ("transformers", "gguf")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")  # gptforge.export_gguf.GGUF_TYPES, spelled here so --help imports no torch
NATIVE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # concrete in 4.x too (5.x's `TokenizersBackend` is 5.x-only)
NATIVE_MODEL_INPUTS = ("input_ids", "attention_mask")
# load-time bookkeeping that Transformers 5.24 writes back into a re-saved tokenizer_config.json; not tokenizer settings
LOAD_TIME_KEYS = ("is_local", "local_files_only", "name_or_path", "_commit_hash")


def export_tokenizer(folder: Path, out: Path) -> list[Path]:
    """Copy the tokenizer of `folder` into `out` as a plain `PreTrainedTokenizerFast` (no remote code)."""
    from ..training.folders import TOKENIZER_COPY_FILES, copy_present

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


@dataclass
class ExportOptions:
    """Every flag of `gptforge export`, and the keywords of `main`."""

    source: str | os.PathLike = option(
        help="gptforge model folder (config.json + model.safetensors)",
        positional=True,
        flags=["--source"],
        metavar="SOURCE",
    )
    output_dir: str | os.PathLike = option(
        help="output folder for the native model; must not exist or be empty",
        positional=True,
        flags=["--out", "--output-dir"],
        metavar="OUT",
    )
    _: KW_ONLY
    to: Literal["transformers", "gguf"] = option(
        "transformers", "target format: a native Transformers folder, or a GGUF file (OUT ends in .gguf)"
    )
    gguf_type: Literal["f32", "f16", "bf16", "q8_0"] = option("f16", "GGUF weight type (with --to gguf)")


@typed_main(ExportOptions)
def main(options: ExportOptions) -> Any:
    """Write the native equivalent of the gptforge model in `source` to `output_dir`; returns the native model.

    Raises `ValueError` for an unknown target, a non-causal-LM folder, a config without an exact native counterpart
    (naming each field that does not map), or a non-empty output folder.
    """
    from ..configuration import GPTForgeConfig
    from ..modeling import GPTForgeForCausalLM
    from ..modeling.conversion import gptforge_config_to_native, to_transformers

    folder, out, to = options.source, options.output_dir, options.to
    if to not in TARGETS:
        raise UsageError(f"unknown export target {to!r}; expected one of {TARGETS}")
    if to == "gguf":  # OUT is a .gguf file; see gptforge.export_gguf
        from ..export_gguf import export_gguf

        try:  # a config llama.cpp cannot read is refused, each field named, before anything is written
            written = export_gguf(folder, out, options.gguf_type)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(f"wrote {out}")
        return written
    folder, out = Path(folder), Path(out)
    config = GPTForgeConfig.from_pretrained(folder)
    architecture = (config.architectures or [GPTForgeForCausalLM.__name__])[0]
    if architecture != GPTForgeForCausalLM.__name__:
        raise UsageError(
            f"{folder} holds a {architecture}; only {GPTForgeForCausalLM.__name__} has a native GPT-2 / Llama / Qwen3 "
            "counterpart"
        )
    try:  # fails here, naming every field that does not map, before loading weights
        gptforge_config_to_native(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"output folder {out} exists and is not empty; pass an empty or new --out")
    model = GPTForgeForCausalLM.from_pretrained(folder, dtype="auto")
    native = to_transformers(model)
    native.save_pretrained(out)
    export_tokenizer(folder, out)
    print(f"wrote {type(native).__name__} to {out}")
    return native
