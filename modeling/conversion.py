"""Conversion between gptforge and Transformers' native GPT-2, Llama and Qwen3 models, and from PyTorch's post-norm
encoder and the seed document's encoder layers.

One explicit name map per source (LitGPT / gpt-fast style). GPT-2 stores its projections as `Conv1D` (weights are
(in, out), so they are transposed) and fuses q, k, v into `c_attn` (split into thirds); Llama's and Qwen3's names are
ours, so their maps are the identity (Qwen3 is Llama with `qk_norm`). Every conversion checks that each source tensor is used exactly once, that every target
tensor is filled, and that shapes agree; a config feature with no counterpart raises a `ValueError` naming it.

This module is not part of a pushed model's code: it imports the native model classes.
"""

from collections.abc import Mapping, Sequence

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from ..configuration.configuration_gptforge import GPTForgeConfig
from .modeling_gptforge import GPTForgeForCausalLM, GPTForgeModel

# source name -> (target names, op); "{}" is the layer index. ops: "copy", "T" (transpose), "split3" (q/k/v thirds
# of the output dimension), "split3_T" (transpose, then split).
GPT2_WEIGHT_MAP: dict[str, tuple[tuple[str, ...], str]] = {
    "transformer.wte.weight": (("model.embed_tokens.weight",), "copy"),
    "transformer.wpe.weight": (("model.embed_positions.weight",), "copy"),
    "transformer.h.{}.ln_1.weight": (("model.layers.{}.input_layernorm.weight",), "copy"),
    "transformer.h.{}.ln_1.bias": (("model.layers.{}.input_layernorm.bias",), "copy"),
    "transformer.h.{}.attn.c_attn.weight": (
        (
            "model.layers.{}.self_attn.q_proj.weight",
            "model.layers.{}.self_attn.k_proj.weight",
            "model.layers.{}.self_attn.v_proj.weight",
        ),
        "split3_T",
    ),
    "transformer.h.{}.attn.c_attn.bias": (
        (
            "model.layers.{}.self_attn.q_proj.bias",
            "model.layers.{}.self_attn.k_proj.bias",
            "model.layers.{}.self_attn.v_proj.bias",
        ),
        "split3",
    ),
    "transformer.h.{}.attn.c_proj.weight": (("model.layers.{}.self_attn.o_proj.weight",), "T"),
    "transformer.h.{}.attn.c_proj.bias": (("model.layers.{}.self_attn.o_proj.bias",), "copy"),
    "transformer.h.{}.ln_2.weight": (("model.layers.{}.post_attention_layernorm.weight",), "copy"),
    "transformer.h.{}.ln_2.bias": (("model.layers.{}.post_attention_layernorm.bias",), "copy"),
    "transformer.h.{}.mlp.c_fc.weight": (("model.layers.{}.mlp.up_proj.weight",), "T"),
    "transformer.h.{}.mlp.c_fc.bias": (("model.layers.{}.mlp.up_proj.bias",), "copy"),
    "transformer.h.{}.mlp.c_proj.weight": (("model.layers.{}.mlp.down_proj.weight",), "T"),
    "transformer.h.{}.mlp.c_proj.bias": (("model.layers.{}.mlp.down_proj.bias",), "copy"),
    "transformer.ln_f.weight": (("model.norm.weight",), "copy"),
    "transformer.ln_f.bias": (("model.norm.bias",), "copy"),
    "lm_head.weight": (("lm_head.weight",), "copy"),
}

# `nn.TransformerEncoder` of `nn.TransformerEncoderLayer(norm_first=False)` -> GPTForgeModel (the trunk; torch's stack
# has no embeddings). norm1 follows attention, norm2 the feed-forward: our post-norm block names them the same way.
TORCH_ENCODER_WEIGHT_MAP: dict[str, tuple[tuple[str, ...], str]] = {
    "layers.{}.self_attn.in_proj_weight": (
        (
            "layers.{}.self_attn.q_proj.weight",
            "layers.{}.self_attn.k_proj.weight",
            "layers.{}.self_attn.v_proj.weight",
        ),
        "split3",
    ),
    "layers.{}.self_attn.in_proj_bias": (
        ("layers.{}.self_attn.q_proj.bias", "layers.{}.self_attn.k_proj.bias", "layers.{}.self_attn.v_proj.bias"),
        "split3",
    ),
    "layers.{}.self_attn.out_proj.weight": (("layers.{}.self_attn.o_proj.weight",), "copy"),
    "layers.{}.self_attn.out_proj.bias": (("layers.{}.self_attn.o_proj.bias",), "copy"),
    "layers.{}.linear1.weight": (("layers.{}.mlp.up_proj.weight",), "copy"),
    "layers.{}.linear1.bias": (("layers.{}.mlp.up_proj.bias",), "copy"),
    "layers.{}.linear2.weight": (("layers.{}.mlp.down_proj.weight",), "copy"),
    "layers.{}.linear2.bias": (("layers.{}.mlp.down_proj.bias",), "copy"),
    "layers.{}.norm1.weight": (("layers.{}.input_layernorm.weight",), "copy"),
    "layers.{}.norm1.bias": (("layers.{}.input_layernorm.bias",), "copy"),
    "layers.{}.norm2.weight": (("layers.{}.post_attention_layernorm.weight",), "copy"),
    "layers.{}.norm2.bias": (("layers.{}.post_attention_layernorm.bias",), "copy"),
}

# The seed document's `EncoderLayer`s (a list or `nn.ModuleList` of them) -> GPTForgeModel's layers. It has no output
# projection (o_proj becomes the identity) and one `layer_norm` for both joins (`shared_post_norm`).
SEED_ENCODER_WEIGHT_MAP: dict[str, tuple[tuple[str, ...], str]] = {
    "{}.self_attention.query.weight": (("layers.{}.self_attn.q_proj.weight",), "copy"),
    "{}.self_attention.query.bias": (("layers.{}.self_attn.q_proj.bias",), "copy"),
    "{}.self_attention.key.weight": (("layers.{}.self_attn.k_proj.weight",), "copy"),
    "{}.self_attention.key.bias": (("layers.{}.self_attn.k_proj.bias",), "copy"),
    "{}.self_attention.value.weight": (("layers.{}.self_attn.v_proj.weight",), "copy"),
    "{}.self_attention.value.bias": (("layers.{}.self_attn.v_proj.bias",), "copy"),
    "{}.feed_forward.0.weight": (("layers.{}.mlp.up_proj.weight",), "copy"),
    "{}.feed_forward.0.bias": (("layers.{}.mlp.up_proj.bias",), "copy"),
    "{}.feed_forward.2.weight": (("layers.{}.mlp.down_proj.weight",), "copy"),
    "{}.feed_forward.2.bias": (("layers.{}.mlp.down_proj.bias",), "copy"),
    "{}.layer_norm.weight": (("layers.{}.input_layernorm.weight",), "copy"),
    "{}.layer_norm.bias": (("layers.{}.input_layernorm.bias",), "copy"),
}

_LLAMA_NAMES = (
    "model.embed_tokens.weight",
    "model.layers.{}.input_layernorm.weight",
    "model.layers.{}.self_attn.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight",
    "model.layers.{}.self_attn.q_proj.bias",
    "model.layers.{}.self_attn.k_proj.bias",
    "model.layers.{}.self_attn.v_proj.bias",
    "model.layers.{}.self_attn.o_proj.bias",
    "model.layers.{}.post_attention_layernorm.weight",
    "model.layers.{}.mlp.gate_proj.weight",
    "model.layers.{}.mlp.up_proj.weight",
    "model.layers.{}.mlp.down_proj.weight",
    "model.layers.{}.mlp.gate_proj.bias",
    "model.layers.{}.mlp.up_proj.bias",
    "model.layers.{}.mlp.down_proj.bias",
    "model.norm.weight",
    "lm_head.weight",
)
# Llama's parameter names are gptforge's: the map is the identity.
LLAMA_WEIGHT_MAP: dict[str, tuple[tuple[str, ...], str]] = {name: ((name,), "copy") for name in _LLAMA_NAMES}
# Qwen3 is Llama with a norm over each head's query and key (and no MLP biases, which the map skips when absent).
QWEN3_WEIGHT_MAP: dict[str, tuple[tuple[str, ...], str]] = {
    **LLAMA_WEIGHT_MAP,
    **{
        name: ((name,), "copy")
        for name in ("model.layers.{}.self_attn.q_norm.weight", "model.layers.{}.self_attn.k_norm.weight")
    },
}


def _forward_op(tensor: torch.Tensor, op: str, count: int) -> list[torch.Tensor]:
    if op.endswith("_T") or op == "T":
        tensor = tensor.t()
    if op.startswith("split3"):
        return [part.contiguous() for part in tensor.chunk(count, dim=0)]
    return [tensor.contiguous()]


def _inverse_op(tensors: list[torch.Tensor], op: str) -> torch.Tensor:
    tensor = torch.cat(tensors, dim=0) if op.startswith("split3") else tensors[0]
    if op.endswith("_T") or op == "T":
        tensor = tensor.t()
    return tensor.contiguous()


def _expand(weight_map: Mapping[str, tuple[tuple[str, ...], str]], num_layers: int) -> dict:
    expanded = {}
    for src, (dsts, op) in weight_map.items():
        for i in range(num_layers) if "{}" in src else [None]:
            key = src.format(i) if i is not None else src
            expanded[key] = (tuple(d.format(i) if i is not None else d for d in dsts), op)
    return expanded


def _convert(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    weight_map: dict,
    num_layers: int,
    reverse: bool,
) -> dict[str, torch.Tensor]:
    """Map `source` tensors onto `target`'s names and shapes; every tensor on both sides must be accounted for."""
    expanded = _expand(weight_map, num_layers)
    if reverse:  # gptforge -> native: iterate the same map from its other end
        expanded = {dsts: (src, op) for src, (dsts, op) in expanded.items()}
    result: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, (dst, op) in expanded.items():
        if reverse:
            if not all(k in source for k in key):
                continue
            used.update(key)
            result[dst] = _inverse_op([source[k] for k in key], op)
        else:
            if key not in source:
                continue
            used.add(key)
            for name, tensor in zip(dst, _forward_op(source[key], op, len(dst)), strict=True):
                result[name] = tensor
    unused = sorted(set(source) - used)
    if unused:
        raise ValueError(f"{len(unused)} source tensors have no counterpart in the name map: {unused[:5]}")
    missing = sorted(set(target) - set(result))
    if missing:
        raise ValueError(f"{len(missing)} target tensors were not filled by the name map: {missing[:5]}")
    for name, tensor in result.items():
        if name not in target:
            raise ValueError(f"converted tensor {name!r} does not exist in the target model")
        if tensor.shape != target[name].shape:
            raise ValueError(
                f"shape mismatch for {name!r}: converted {tuple(tensor.shape)}, expected {tuple(target[name].shape)}"
            )
    return result


def _persistent_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers, with tied copies listed once (under the name that owns the storage)."""
    state = model.state_dict()
    if model.config.tie_word_embeddings and "lm_head.weight" in state:
        state.pop("lm_head.weight")
    return state


def gpt2_config_to_gptforge(config: GPT2Config) -> GPTForgeConfig:
    unsupported = {
        "scale_attn_weights": (config.scale_attn_weights, True),
        "scale_attn_by_inverse_layer_idx": (config.scale_attn_by_inverse_layer_idx, False),
        "reorder_and_upcast_attn": (config.reorder_and_upcast_attn, False),
        "add_cross_attention": (getattr(config, "add_cross_attention", False), False),
    }
    for name, (value, expected) in unsupported.items():
        if value != expected:
            raise ValueError(f"GPT-2 feature {name}={value!r} has no gptforge counterpart (only {expected!r} maps)")
    return GPTForgeConfig.from_preset(
        "gpt2-124m",
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.n_inner or 4 * config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        max_position_embeddings=config.n_positions,
        hidden_act=config.activation_function,
        norm_eps=config.layer_norm_epsilon,
        attention_dropout=config.attn_pdrop,
        hidden_dropout=config.resid_pdrop,
        embedding_dropout=config.embd_pdrop,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


def _rotary_config_to_gptforge(config: LlamaConfig | Qwen3Config, **switches) -> GPTForgeConfig:
    """The fields Llama and Qwen3 configs share, as a gptforge config (the `tiny`-style defaults: RoPE, RMSNorm,
    SwiGLU), plus each model's own `switches`."""
    return GPTForgeConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters=dict(config.rope_parameters),
        norm_eps=config.rms_norm_eps,
        hidden_act=config.hidden_act,
        attention_bias=config.attention_bias,
        attention_dropout=float(config.attention_dropout or 0.0),
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        **switches,
    )


def llama_config_to_gptforge(config: LlamaConfig) -> GPTForgeConfig:
    if (config.pretraining_tp or 1) != 1:
        raise ValueError(
            f"Llama feature pretraining_tp={config.pretraining_tp} has no gptforge counterpart (only 1 maps)"
        )
    return _rotary_config_to_gptforge(config, mlp_bias=config.mlp_bias)


def qwen3_config_to_gptforge(config: Qwen3Config) -> GPTForgeConfig:
    layer_types = set(config.layer_types or ["full_attention"])
    if config.use_sliding_window or layer_types != {"full_attention"}:
        raise ValueError(
            f"Qwen3 feature use_sliding_window={config.use_sliding_window!r} (layer_types {sorted(layer_types)}) has no "
            "gptforge counterpart (only full attention in every layer maps)"
        )
    return _rotary_config_to_gptforge(config, qk_norm=True)


def _mismatches(config: GPTForgeConfig, required: dict) -> list[str]:
    return [f"{k}={getattr(config, k)!r} (needs {v!r})" for k, v in required.items() if getattr(config, k) != v]


# What an export refusal suggests: the training recipe whose model keeps the native and GGUF exports.
EXPORTABLE_RECIPE_HINT = (
    "A model trained with `gptforge pretrain --recipe modern-exportable` (or `classic`) keeps the native and GGUF "
    "exports."
)


def gptforge_config_to_native(config: GPTForgeConfig) -> GPT2Config | LlamaConfig | Qwen3Config:
    """The native config that reproduces `config` exactly, or a `ValueError` naming every feature that does not map."""
    gpt2_required = {
        "position_embedding_type": "learned",
        "norm_type": "layernorm",
        "norm_bias": True,
        "norm_position": "pre",
        "is_causal": True,
        "mlp_type": "plain",
        "attention_bias": True,
        "mlp_bias": True,
        "num_key_value_heads": config.num_attention_heads,
        "head_dim": config.hidden_size // config.num_attention_heads,
        "attention_scale": None,
        "qk_norm": False,
        "final_logit_softcapping": None,
        "embedding_shortcut": False,
    }
    llama_required = {
        "is_causal": True,
        "norm_position": "pre",
        "embedding_dropout": 0.0,
        "position_embedding_type": "rope",
        "norm_type": "rmsnorm",
        "mlp_type": "gated",
        "hidden_dropout": 0.0,
        "attention_scale": None,
        "final_logit_softcapping": None,
        "embedding_shortcut": False,
    }
    # Qwen3: Llama's block with QK-norm; its MLP has no biases
    qwen3_required = {**llama_required, "qk_norm": True, "mlp_bias": False}
    llama_required["qk_norm"] = False
    gpt2_problems = _mismatches(config, gpt2_required)
    if not gpt2_problems:
        return GPT2Config(
            vocab_size=config.vocab_size,
            n_positions=config.max_position_embeddings,
            n_embd=config.hidden_size,
            n_layer=config.num_hidden_layers,
            n_head=config.num_attention_heads,
            n_inner=config.intermediate_size,
            activation_function=config.hidden_act,
            resid_pdrop=config.hidden_dropout,
            embd_pdrop=config.embedding_dropout,
            attn_pdrop=config.attention_dropout,
            layer_norm_epsilon=config.norm_eps,
            initializer_range=config.initializer_range,
            tie_word_embeddings=config.tie_word_embeddings,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
    llama_problems = _mismatches(config, llama_required)
    qwen3_problems = _mismatches(config, qwen3_required)
    if not qwen3_problems or not llama_problems:
        assert config.rope_parameters is not None  # rotary positions: filled by __post_init__
        # what Llama and Qwen3 configs share; Qwen3 adds per-head q/k norms (implied) and a sliding window (off)
        rotary = dict(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            hidden_act=config.hidden_act,
            max_position_embeddings=config.max_position_embeddings,
            initializer_range=config.initializer_range,
            rms_norm_eps=config.norm_eps,
            rope_parameters=dict(config.rope_parameters),
            attention_bias=config.attention_bias,
            attention_dropout=config.attention_dropout,
            tie_word_embeddings=config.tie_word_embeddings,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
        if not qwen3_problems:
            return Qwen3Config(**rotary, use_sliding_window=False)
        return LlamaConfig(**rotary, mlp_bias=config.mlp_bias)
    raise ValueError(
        "this gptforge config has no exact native Transformers counterpart. "
        f"As GPT2LMHeadModel: {', '.join(gpt2_problems)}. As LlamaForCausalLM: {', '.join(llama_problems)}. "
        f"As Qwen3ForCausalLM: {', '.join(qwen3_problems)}. {EXPORTABLE_RECIPE_HINT}"
    )


def load_torch_encoder_layers(model: GPTForgeModel, encoder: torch.nn.TransformerEncoder) -> None:
    """Copy the layers of a post-norm `nn.TransformerEncoder` into a gptforge trunk (embeddings are left alone)."""
    layer = encoder.layers[0]
    if layer.norm_first or encoder.norm is not None:
        raise ValueError("only post-norm encoders without a final norm map (norm_first=False, norm=None)")
    if model.config.norm_position != "post" or model.config.is_causal:
        raise ValueError("the gptforge model must be a post-norm bidirectional encoder (the `encoder` preset)")
    target = {k: v for k, v in model.state_dict().items() if k.startswith("layers.")}
    state = _convert(encoder.state_dict(), target, TORCH_ENCODER_WEIGHT_MAP, len(encoder.layers), reverse=False)
    model.load_state_dict(state, strict=False)


def from_seed_encoder(layers: Sequence[torch.nn.Module], **overrides) -> GPTForgeModel:
    """A `seed-encoder` trunk whose blocks compute what the seed document's stacked `EncoderLayer`s compute (its
    `SelfAttention`: one unscaled, unmasked head, no output projection; one `layer_norm` at both residual joins).

    Sizes, norm epsilon and dropout come from the layers; `overrides` set the rest (`vocab_size`,
    `max_position_embeddings`, ...). The document's layers have no embeddings: `embed_tokens` and `embed_positions`
    keep their fresh initialisation. Each o_proj is the identity with a zero bias.
    """
    stack = torch.nn.ModuleList(layers)
    if not stack:
        raise ValueError("from_seed_encoder needs at least one EncoderLayer, got none")
    first = stack[0]
    feed_forward = getattr(first, "feed_forward", None)
    if not (
        isinstance(getattr(first, "self_attention", None), torch.nn.Module)
        and isinstance(feed_forward, torch.nn.Sequential)
        and len(feed_forward) == 3
        and isinstance(feed_forward[1], torch.nn.ReLU)
        and isinstance(getattr(first, "layer_norm", None), torch.nn.LayerNorm)
        and isinstance(getattr(first, "dropout", None), torch.nn.Dropout)
    ):
        raise ValueError(
            f"from_seed_encoder converts the seed document's EncoderLayer (self_attention, feed_forward = "
            f"Sequential(Linear, ReLU, Linear), layer_norm, dropout), got {type(first).__name__}"
        )
    sizes = dict(
        hidden_size=first.layer_norm.normalized_shape[0],
        intermediate_size=feed_forward[0].out_features,
        num_hidden_layers=len(stack),
        norm_eps=float(first.layer_norm.eps),
        hidden_dropout=float(first.dropout.p),
    )
    model = GPTForgeModel(GPTForgeConfig.from_preset("seed-encoder", **{**sizes, **overrides}))
    if model.config.attention_scale != 1.0 or model.config.num_attention_heads != 1 or model.config.is_causal:
        raise ValueError(
            "the seed encoder's attention is one unscaled bidirectional head: keep num_attention_heads=1, "
            "attention_scale=1.0 and is_causal=False"
        )
    target = {k: v for k, v in model.state_dict().items() if k.startswith("layers.") and ".o_proj." not in k}
    state = _convert(stack.state_dict(), target, SEED_ENCODER_WEIGHT_MAP, len(stack), reverse=False)
    eye = torch.eye(model.config.hidden_size, dtype=model.dtype)
    for i in range(len(stack)):
        state[f"layers.{i}.self_attn.o_proj.weight"] = eye
        state[f"layers.{i}.self_attn.o_proj.bias"] = torch.zeros(model.config.hidden_size, dtype=model.dtype)
    model.load_state_dict(state, strict=False)
    return model.eval() if not first.training else model


def from_transformers(model: GPT2LMHeadModel | LlamaForCausalLM | Qwen3ForCausalLM) -> GPTForgeForCausalLM:
    """A `GPTForgeForCausalLM` with the same weights (and dtype) as a native GPT-2, Llama or Qwen3 causal LM."""
    if isinstance(model, GPT2LMHeadModel):
        config, weight_map = gpt2_config_to_gptforge(model.config), GPT2_WEIGHT_MAP
    elif isinstance(model, LlamaForCausalLM):
        config, weight_map = llama_config_to_gptforge(model.config), LLAMA_WEIGHT_MAP
    elif isinstance(model, Qwen3ForCausalLM):
        config, weight_map = qwen3_config_to_gptforge(model.config), QWEN3_WEIGHT_MAP
    else:
        raise ValueError(
            "from_transformers converts GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM, got "
            f"{type(model).__name__}"
        )
    config._attn_implementation = model.config._attn_implementation
    target = GPTForgeForCausalLM(config).to(model.dtype)
    state = _convert(
        _persistent_state(model), _persistent_state(target), weight_map, config.num_hidden_layers, reverse=False
    )
    target.load_state_dict(state, strict=False)
    target.tie_weights()
    target.generation_config = model.generation_config
    return target.eval() if not model.training else target


def to_transformers(model: GPTForgeForCausalLM) -> GPT2LMHeadModel | LlamaForCausalLM | Qwen3ForCausalLM:
    """The native `GPT2LMHeadModel`, `LlamaForCausalLM` or `Qwen3ForCausalLM` with the same weights, when the config
    maps exactly."""
    if not isinstance(model, GPTForgeForCausalLM):
        raise ValueError(f"to_transformers converts GPTForgeForCausalLM, got {type(model).__name__}")
    native_config = gptforge_config_to_native(model.config)
    native_cls: type[PreTrainedModel]
    if isinstance(native_config, GPT2Config):
        native_cls, weight_map = GPT2LMHeadModel, GPT2_WEIGHT_MAP
    elif isinstance(native_config, Qwen3Config):
        native_cls, weight_map = Qwen3ForCausalLM, QWEN3_WEIGHT_MAP
    else:
        native_cls, weight_map = LlamaForCausalLM, LLAMA_WEIGHT_MAP
    native_config._attn_implementation = model.config._attn_implementation
    target = native_cls(native_config).to(model.dtype)
    state = _convert(
        _persistent_state(model), _persistent_state(target), weight_map, model.config.num_hidden_layers, reverse=True
    )
    target.load_state_dict(state, strict=False)
    target.tie_weights()
    target.generation_config = model.generation_config
    return target.eval() if not model.training else target


__all__ = [
    "GPT2_WEIGHT_MAP",
    "LLAMA_WEIGHT_MAP",
    "QWEN3_WEIGHT_MAP",
    "TORCH_ENCODER_WEIGHT_MAP",
    "SEED_ENCODER_WEIGHT_MAP",
    "load_torch_encoder_layers",
    "from_seed_encoder",
    "from_transformers",
    "to_transformers",
    "gptforge_config_to_native",
]
