"""Write a gptforge causal LM as a GGUF file (llama.cpp, Ollama, LM Studio) through llama.cpp's own `gguf` writer.

Only models that llama.cpp runs as one of its own architectures are written: a Llama-shaped gptforge model (RoPE,
RMSNorm, gated SiLU MLP, no biases) as `llama`, a GPT-2-shaped one (learned positions, LayerNorm with bias, tanh-GELU
MLP four times the width) as `gpt2`. Anything else is a `ValueError` naming each field that does not map: GGUF readers
rebuild the model from a fixed architecture and a handful of keys, so a feature they cannot express would be silently
dropped, not approximated.

The layout follows llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel`, `GPT2Model`, `TextModel.prepare_tensors`,
`_set_vocab_gpt2`):

- tensor names `token_embd`, `blk.N.attn_q` ... `output`; GPT-2's q, k, v fused into `attn_qkv` as in `c_attn`;
- the rows of Llama's q and k permuted per head from Transformers' half-split rotary layout to llama.cpp's
  interleaved one (`LlamaModel.permute`); Transformers' GGUF loader undoes it;
- 1-D tensors (norms, biases) and GPT-2's position table stay F32 whatever the file type; a matrix whose rows do not
  split into Q8_0 blocks of 32 falls back to F16, as in the converter;
- the tokenizer as `tokenizer.ggml.model = "gpt2"` (byte-level BPE): byte-level token strings, token types (CONTROL
  for special added tokens), merges, special ids, `add_bos_token`, the chat template (`gguf.SpecialVocab` reads
  these from the folder as the converter does) and the pre-tokenizer name `gpt-2` (GPT-2's split regex).

This module imports `gguf` (the `gguf` extra) and is not part of a pushed model's code.
"""

import json
import os
import tempfile
from pathlib import Path

import torch

from .configuration import GPTForgeConfig
from .modeling import GPTForgeForCausalLM
from .modeling.conversion import EXPORTABLE_RECIPE_HINT, gptforge_config_to_native

# file type name -> (llama.cpp file type, tensor type of the matrices)
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
# GPT-2's split regex, which `pre_tokenizers.ByteLevel(use_regex=True)` applies; llama.cpp's name for it
GPT2_PRE_TOKENIZER = "gpt-2"
# llama.cpp's GPT-2 graph applies ggml_gelu, the tanh approximation
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def _gguf():
    try:
        import gguf
    except ModuleNotFoundError as error:  # an optional extra: say which
        raise ModuleNotFoundError(
            "exporting to GGUF needs the `gguf` package: pip install 'gptforge[gguf]'", name="gguf"
        ) from error
    return gguf


def gguf_architecture(config: GPTForgeConfig) -> str:
    """`"llama"` or `"gpt2"`: the llama.cpp architecture that runs `config` exactly, or a `ValueError` naming every
    field that does not map."""
    native = gptforge_config_to_native(config)  # raises naming the fields with no GPT-2 / Llama counterpart at all
    problems = []
    if type(native).__name__ == "GPT2Config":
        architecture = "gpt2"
        if config.hidden_act not in GPT2_ACTIVATIONS:
            problems.append(f"hidden_act={config.hidden_act!r} (llama.cpp's gpt2 uses tanh GELU: {GPT2_ACTIVATIONS})")
        if config.intermediate_size != 4 * config.hidden_size:
            # Transformers' GGUF loader leaves GPT-2's `n_inner` unset, i.e. 4 * hidden_size
            problems.append(
                f"intermediate_size={config.intermediate_size} (GGUF gpt2 readers assume 4 * hidden_size = "
                f"{4 * config.hidden_size})"
            )
    elif type(native).__name__ == "Qwen3Config":
        architecture = "llama"
        problems.append("qk_norm=True (needs False: the GGUF export writes llama and gpt2 files only)")
    else:
        architecture = "llama"
        if config.hidden_act != "silu":
            problems.append(f"hidden_act={config.hidden_act!r} (llama.cpp's llama uses 'silu')")
        # llama.cpp accepts them, but Transformers' GGUF loader builds a bias-free Llama and would drop them
        for field in ("attention_bias", "mlp_bias"):
            if getattr(config, field):
                problems.append(f"{field}=True (needs False)")
        rope_type = (config.rope_parameters or {}).get("rope_type", "default")
        if rope_type != "default":
            problems.append(f"rope_parameters['rope_type']={rope_type!r} (needs 'default')")
    if problems:
        raise ValueError(
            f"this gptforge config has no exact GGUF {architecture} counterpart: {', '.join(problems)}. "
            f"{EXPORTABLE_RECIPE_HINT}"
        )
    return architecture


def _permute_rotary_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """llama.cpp's `LlamaModel.permute`: each head's rows from [first halves | second halves] to interleaved pairs."""
    head_dim = weight.shape[0] // num_heads
    return weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model: GPTForgeForCausalLM, architecture: str) -> dict[str, torch.Tensor]:
    """The model's weights under llama.cpp's tensor names and layouts, in file order."""
    config = model.config
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {"token_embd.weight": state["model.embed_tokens.weight"]}
    if architecture == "gpt2":
        tensors["position_embd.weight"] = state["model.embed_positions.weight"]
    for i in range(config.num_hidden_layers):
        layer, blk = f"model.layers.{i}.", f"blk.{i}."
        if architecture == "llama":
            kv_heads = config.num_key_value_heads
            assert kv_heads is not None  # GPTForgeConfig fills it in __post_init__
            tensors |= {
                blk + "attn_norm.weight": state[layer + "input_layernorm.weight"],
                blk + "attn_q.weight": _permute_rotary_rows(
                    state[layer + "self_attn.q_proj.weight"], config.num_attention_heads
                ),
                blk + "attn_k.weight": _permute_rotary_rows(state[layer + "self_attn.k_proj.weight"], kv_heads),
                blk + "attn_v.weight": state[layer + "self_attn.v_proj.weight"],
                blk + "attn_output.weight": state[layer + "self_attn.o_proj.weight"],
                blk + "ffn_norm.weight": state[layer + "post_attention_layernorm.weight"],
                blk + "ffn_gate.weight": state[layer + "mlp.gate_proj.weight"],
                blk + "ffn_up.weight": state[layer + "mlp.up_proj.weight"],
                blk + "ffn_down.weight": state[layer + "mlp.down_proj.weight"],
            }
            continue
        for kind in ("weight", "bias"):
            qkv = [state[f"{layer}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            tensors |= {
                f"{blk}attn_norm.{kind}": state[f"{layer}input_layernorm.{kind}"],
                f"{blk}attn_qkv.{kind}": torch.cat(qkv, dim=0),  # GPT-2's c_attn, in (out, in) layout
                f"{blk}attn_output.{kind}": state[f"{layer}self_attn.o_proj.{kind}"],
                f"{blk}ffn_norm.{kind}": state[f"{layer}post_attention_layernorm.{kind}"],
                f"{blk}ffn_up.{kind}": state[f"{layer}mlp.up_proj.{kind}"],
                f"{blk}ffn_down.{kind}": state[f"{layer}mlp.down_proj.{kind}"],
            }
    tensors["output_norm.weight"] = state["model.norm.weight"]
    if architecture == "gpt2":
        tensors["output_norm.bias"] = state["model.norm.bias"]
    # The converter writes GPT-2's output matrix even when tied (llama.cpp releases before the fallback need it);
    # Llama's only when it is a matrix of its own.
    if architecture == "gpt2" or not config.tie_word_embeddings:
        tensors["output.weight"] = model.lm_head.weight.detach()
    return tensors


def _encode_tensor(gguf, name: str, tensor: torch.Tensor, outtype: str):
    """(data, tensor type) as `TextModel.prepare_tensors` stores it for this file type."""
    types = gguf.GGMLQuantizationType
    data = tensor.detach().to(torch.float32).cpu().numpy()
    qtype = {"f32": types.F32, "f16": types.F16, "bf16": types.BF16, "q8_0": types.Q8_0}[outtype]
    if data.ndim <= 1 or name.endswith("_norm.weight") or name == "position_embd.weight":
        qtype = types.F32
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:  # rows not a multiple of the block size
        return gguf.quants.quantize(data, types.F16), types.F16


def _vocab(folder: Path, vocab_size: int, gguf) -> tuple[list[str], list[int]]:
    """Token strings and types for ids 0..vocab_size-1, as `get_vocab_base` builds them."""
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ValueError(f"{folder} has no tokenizer.json; a GGUF file carries its tokenizer")
    data = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    model, pre = data.get("model") or {}, data.get("pre_tokenizer") or {}
    pre_types = [p.get("type") for p in pre.get("pretokenizers", [pre])]
    if model.get("type") != "BPE" or pre_types != ["ByteLevel"] or not pre.get("use_regex", True):
        raise ValueError(
            f"{tokenizer_file}: model type {model.get('type')!r} with pre-tokenizers {pre_types}; GGUF export needs "
            "the byte-level BPE with GPT-2's split (model 'BPE', pre-tokenizer ByteLevel with use_regex)"
        )
    reverse = {index: token for token, index in model["vocab"].items()}
    added = {entry["id"]: entry for entry in data.get("added_tokens", [])}
    reverse |= {index: entry["content"] for index, entry in added.items()}
    if max(reverse) >= vocab_size:
        raise ValueError(f"the tokenizer has id {max(reverse)}, beyond the model's vocab_size={vocab_size}")
    token_type = gguf.TokenType
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in reverse:  # the embedding is wider than the vocabulary
            tokens.append(f"[PAD{index}]")
            types.append(token_type.UNUSED)
        elif index in added:
            tokens.append(reverse[index])
            types.append(token_type.CONTROL if added[index].get("special") else token_type.USER_DEFINED)
        else:
            tokens.append(reverse[index])
            types.append(token_type.NORMAL)
    return tokens, types


def export_gguf(folder: str | os.PathLike[str], out: str | os.PathLike[str], outtype: str = "f16") -> Path:
    """Write the gptforge causal LM in `folder` (weights and tokenizer) to the GGUF file `out`; returns its path.

    `outtype` is `f32`, `f16`, `bf16` or `q8_0` (llama.cpp's `--outtype`). The file is written next to `out` under a
    temporary name and renamed at the end, so an interrupted export never leaves a partial `out`.

    Raises `ValueError` for an unknown type, an existing `out`, a folder that is not a causal LM, a config or
    tokenizer with no GGUF counterpart (naming what does not map).
    """
    gguf = _gguf()
    if outtype not in GGUF_TYPES:
        raise ValueError(f"unknown GGUF type {outtype!r}; expected one of {GGUF_TYPES}")
    folder, out = Path(folder), Path(out)
    if out.exists():
        raise ValueError(f"output file {out} already exists")
    config = GPTForgeConfig.from_pretrained(folder)
    name = (config.architectures or [GPTForgeForCausalLM.__name__])[0]
    if name != GPTForgeForCausalLM.__name__:
        raise ValueError(f"{folder} holds a {name}; only {GPTForgeForCausalLM.__name__} has a GGUF counterpart")
    architecture = gguf_architecture(config)
    tokens, token_types = _vocab(folder, config.vocab_size, gguf)
    model = GPTForgeForCausalLM.from_pretrained(folder, dtype="auto").eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(descriptor)
    try:
        writer = gguf.GGUFWriter(partial, architecture)
        writer.add_name(folder.resolve().name)
        writer.add_file_type(
            {
                "f32": gguf.LlamaFileType.ALL_F32,
                "f16": gguf.LlamaFileType.MOSTLY_F16,
                "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            }[outtype]
        )
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        if architecture == "gpt2":
            writer.add_layer_norm_eps(config.norm_eps)
        else:
            assert config.rope_parameters is not None  # a Llama-shaped config has RoPE (checked above)
            writer.add_head_count_kv(config.num_key_value_heads)
            writer.add_layer_norm_rms_eps(config.norm_eps)
            writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
            writer.add_rope_dimension_count(config.head_dim)
            writer.add_key_length(config.head_dim)
            writer.add_value_length(config.head_dim)
            writer.add_vocab_size(config.vocab_size)

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(GPT2_PRE_TOKENIZER)
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        # merges, bos/eos/pad ids (from tokenizer_config.json and config.json), add_bos/eos_token, chat template
        gguf.SpecialVocab(folder, load_merges=True, n_vocab=config.vocab_size).add_to_gguf(writer, quiet=True)

        for tensor_name, tensor in gguf_tensors(model, architecture).items():
            data, qtype = _encode_tensor(gguf, tensor_name, tensor, outtype)
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)  # the writer turns a byte shape into elements

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return out


__all__ = ["GGUF_TYPES", "export_gguf", "gguf_architecture", "gguf_tensors"]
