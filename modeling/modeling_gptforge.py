"""GPTForge: one configurable GPT, written the way Transformers writes its own models.

It reads top to bottom: norm, rotary, MLP, attention, block, pretrained base, trunk, heads. What differs from a
vanilla GPT (nanoGPT's `model.py`):
- every architectural choice is a config switch, so one class reproduces GPT-2 (learned positions, LayerNorm, GELU,
  biases, tied head), Llama (RoPE, RMSNorm, SwiGLU, GQA, untied head, every `rope_type`), a post-norm bidirectional
  encoder (`nn.TransformerEncoderLayer(norm_first=False)`) and the seed document's encoder, exactly: tests copy
  weights both ways and compare logits;
- parameter names are Transformers' Llama names (`embed_tokens`, `q_proj`, `gate_proj`, `down_proj`, `norm`,
  `lm_head`), so PEFT targets, FSDP wrapping and tensor-parallel plans work without configuration;
- attention runs through `ALL_ATTENTION_FUNCTIONS` (eager, sdpa, flex, flash), masks through `masking_utils`, the KV
  cache through `Cache` objects, and outputs through `modeling_outputs`, so `generate`, static caches and
  `torch.compile` behave as with a native model; blocks return plain tensors, and Transformers' `capture_outputs`
  records hidden states and attention weights by hooks, as for Llama (attentions under any backend: a call that asks
  for them runs the eager attention);
- forward accepts the cache as `cache=` (what Transformers 5.24's `generate` passes) and, as Llama does through
  Transformers' `deprecate_kwarg`, as `past_key_values=` (with a FutureWarning); the token-classification and
  question-answering heads are Transformers' `GenericForTokenClassification` / `GenericForQuestionAnswering` on
  gptforge's trunk;
- without explicit `position_ids`, a 2D attention mask sets them (left padding keeps learned positions right);
- training with `labels` runs the LM head and the loss in row chunks (`ChunkedLinearCrossEntropy`: the same loss and
  gradients without full-vocabulary logits, which are then not returned); SwiGLU and RMSNorm keep less for backward
  (`SiLUMul`, `RMSNormFunction`); unpadded inputs skip the attention mask so SDPA takes its causal kernel
  (tests/test_fused_paths.py holds each fast path to the plain one).

Two self-contained parts live in sibling files, imported here: the chunked loss (`loss_gptforge.py`) and the
input and weights-file checks (`checks_gptforge.py`).
"""

import copy
import math
from collections.abc import Callable
from functools import partial

import torch
import transformers
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import (
    GenericForQuestionAnswering,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple, is_torch_flex_attn_available
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import capture_outputs

from ..configuration.configuration_gptforge import GPTForgeConfig
from .checks_gptforge import check_inputs, check_loaded_keys, check_positions, loading_error
from .loss_gptforge import chunked_causal_lm_loss

if is_torch_flex_attn_available():
    from torch.nn.attention.flex_attention import BlockMask

# Below this release a forward that never sees `cache=` decodes wrongly without an error, so refuse at import time.
MIN_TRANSFORMERS = (5, 24)
if tuple(int(part) for part in transformers.__version__.split(".")[:2]) < MIN_TRANSFORMERS:
    raise ImportError(
        f"gptforge models need transformers>={'.'.join(map(str, MIN_TRANSFORMERS))},<6; found {transformers.__version__}"
    )


def eager_autograd() -> bool:
    """Whether autograd records this forward outside `torch.compile`: when the hand-written backward paths below
    (`RMSNormFunction`, `SiLUMul`, the chunked loss) apply. Inference needs none of them, and compiled graphs keep the
    plain ops, whose saving and recomputing Inductor's partitioner already decides."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


class RMSNormFunction(torch.autograd.Function):
    """fp32 RMSNorm for CPU training: the forward runs `F.rms_norm`'s own kernels (bit-identical output), but only `x`
    and `1/rms` are kept for backward, which recomputes the normalised `x` and takes the gradient in closed form.

    Autograd through `F.rms_norm` (a composite of six kernels on CPU) also keeps the normalised `x`, a (tokens,
    hidden) tensor per norm, and runs a dozen backward kernels; here it is nine. The input gradient differs from
    autograd's in the last bits (another summation order); tests/test_fused_paths.py bounds it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, rstd, weight)
        ctx.eps = eps
        return x * rstd * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, rstd, weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # backward(create_graph=True): rstd again from x, so its dependence on x is seen
            rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ctx.eps)
        normed = x * rstd
        grad_weight = (grad * normed).sum(dim=tuple(range(grad.dim() - 1))) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dx of w * x * rstd(x): rstd * (g - normed * mean(g * normed)), with g = grad * w
            grad_normed = grad * weight
            grad_x = (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True)) * rstd
        return grad_x, grad_weight, None


class GPTForgeRMSNorm(nn.Module):
    """RMSNorm as in Llama: normalise in fp32, scale in the input dtype (bit-for-bit what LlamaRMSNorm does)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # bit-for-bit the same numbers in fp32 (tests/test_fused_paths.py). Eager CPU training keeps less for
            # backward; on CUDA, `rms_norm` has a fused kernel of its own, which a six-kernel forward would not beat.
            if hidden_states.device.type == "cpu" and eager_autograd():
                return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)
            return nn.functional.rms_norm(hidden_states, self.weight.shape, self.weight, self.variance_epsilon)
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


def build_norm(config: GPTForgeConfig, size: int | None = None) -> nn.Module:
    """The config's norm over `size` features (default: hidden_size; qk_norm's per-head norms take head_dim)."""
    size = size or config.hidden_size
    if config.norm_type == "rmsnorm":
        return GPTForgeRMSNorm(size, eps=config.norm_eps)
    return nn.LayerNorm(size, eps=config.norm_eps, bias=config.norm_bias)


class GPTForgeRotaryEmbedding(nn.Module):
    """Rotary position embedding (Llama's), any `rope_type` of `ROPE_INIT_FUNCTIONS` with Llama's numbers: `dynamic`
    and `longrope` recompute their frequencies for positions past the original context in the forward, through
    Transformers' own `dynamic_rope_update` (which reads `max_seq_len_cached` and `original_max_seq_len`).

    NOTE `inv_freq` is a non-persistent buffer: Transformers 5 builds models on the meta device and refills such
    buffers with garbage after `from_pretrained`, so `_init_weights` recomputes it from the config.
    """

    def __init__(self, config: GPTForgeConfig) -> None:
        super().__init__()
        self.config = config
        assert config.rope_parameters is not None  # __post_init__ fills it whenever positions are rotary
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        inv_freq, self.attention_scaling = self.compute_inv_freq(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    def compute_inv_freq(self, config: GPTForgeConfig) -> tuple[torch.Tensor, float]:
        if self.rope_type == "default":
            return self.compute_default_rope_parameters(config)
        return ROPE_INIT_FUNCTIONS[self.rope_type](config)

    @staticmethod
    def compute_default_rope_parameters(config: GPTForgeConfig, **kwargs) -> tuple[torch.Tensor, float]:
        assert config.rope_parameters is not None and config.head_dim is not None  # filled by __post_init__
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # fp32 angles whatever the model dtype: bf16 positions lose integer precision above 256
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:  # skipped when it is 1: the same numbers, two kernels fewer per forward
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        if x.dtype != torch.float32:
            cos, sin = cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)
        return cos, sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, hd): broadcast over heads
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class SiLUMul(torch.autograd.Function):
    """`silu(gate) * up` that keeps only `gate` and `up` for backward and recomputes `silu(gate)` there.

    Autograd would also keep `silu(gate)`: a third (tokens, intermediate) tensor per layer, the largest activations of
    a SwiGLU model (a quarter of its MLP's). The backward runs the kernels autograd runs, in its order, so values and
    gradients are bit-identical to the plain ops (tests/test_fused_paths.py); second derivatives work too.
    """

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return nn.functional.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = ctx.saved_tensors
        if torch.is_grad_enabled():  # backward(create_graph=True): silu's derivative in ops autograd can differentiate
            sigmoid = torch.sigmoid(gate)
            return grad * up * sigmoid * (1 + gate * (1 - sigmoid)), grad * nn.functional.silu(gate)
        grad_gate = grad * up
        # in place, on buffers made here: two new tensors per call where autograd's backward allocates three
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        return grad_gate, nn.functional.silu(gate).mul_(grad)


class GPTForgeMLP(nn.Module):
    """Gated (SwiGLU: down(act(gate(x)) * up(x))) or plain (GPT-2: down(act(up(x)))) feed-forward."""

    def __init__(self, config: GPTForgeConfig) -> None:
        super().__init__()
        self.gated = config.mlp_type == "gated"
        self.silu_gate = self.gated and config.hidden_act in ("silu", "swish")  # SwiGLU: `SiLUMul` saves memory
        if self.gated:
            self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.down_proj.is_residual_projection = True  # read by _init_weights (GPT-2's scaled init)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.silu_gate and eager_autograd():
            return self.down_proj(SiLUMul.apply(self.gate_proj(x), self.up_proj(x)))
        if self.gated:
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act_fn(self.up_proj(x)))


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd), as `torch.repeat_interleave(x, n_rep, dim=1)` without a copy
    until the reshape."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference attention (and the only one that returns weights). Adapted from Transformers' Llama."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # (B, nh, Tq, Tk)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()  # (B, Tq, nh, hd)
    return attn_output, attn_weights


# Keys per row that torch's CPU flex-attention kernel handles in whole vectors; see `pad_keys_for_cpu_flex`.
CPU_FLEX_KEY_MULTIPLE = 16


def pad_keys_for_cpu_flex(
    key: torch.Tensor, value: torch.Tensor, block_mask: "BlockMask"
) -> tuple[torch.Tensor, torch.Tensor, "BlockMask"]:
    """Pad keys and values to a multiple of 16 for flex attention on CPU, the padding masked out.

    The CPU kernel Inductor generates from AVX2 vectors (torch 2.13) applies the mask function to a key block whose
    length is 8 more than a multiple of 16 past the end of each row of scores: the first call of a process with such
    a length (a packed row of 5 + 9 + 3 + 7 tokens, say) returned NaN or logits off by whole units, run to run, while
    AVX-512 code and other lengths were right (tests/test_packing_and_serving_contract.py runs it in fresh processes).
    Padded keys never cross a 128-token block, so the block mask keeps its blocks and only learns the new length.
    """
    kv_len = key.shape[-2]
    pad = -kv_len % CPU_FLEX_KEY_MULTIPLE
    if pad == 0:
        return key, value, block_mask
    mask_mod = block_mask.mask_mod

    def within_keys(batch_idx, head_idx, q_idx, kv_idx):
        # the clamp keeps the wrapped function's own indexing in range: Transformers' packed-row mask reads
        # `position_ids[b, kv_idx]` without a bound, which compiled code checks and refuses past the row
        return (kv_idx < kv_len) & mask_mod(batch_idx, head_idx, q_idx, kv_idx.clamp(max=kv_len - 1))

    padded_mask = BlockMask.from_kv_blocks(
        block_mask.kv_num_blocks,
        block_mask.kv_indices,
        block_mask.full_kv_num_blocks,
        block_mask.full_kv_indices,
        BLOCK_SIZE=block_mask.BLOCK_SIZE,
        mask_mod=within_keys,
        seq_lengths=(block_mask.seq_lengths[0], kv_len + pad),
    )
    pad_keys = (0, 0, 0, pad)  # (head_dim: none, keys: `pad` at the end)
    return nn.functional.pad(key, pad_keys), nn.functional.pad(value, pad_keys), padded_mask


class GPTForgeAttention(nn.Module):
    """Multi-head, grouped-query or multi-query attention; causal or bidirectional; with or without RoPE."""

    def __init__(self, config: GPTForgeConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        assert config.head_dim is not None and config.num_key_value_heads is not None  # filled by __post_init__
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = config.attention_scale if config.attention_scale is not None else self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        # read by the sdpa/flash interfaces to pick their causal kernels when no mask is needed
        self.is_causal = config.is_causal

        q_out = config.num_attention_heads * self.head_dim
        kv_out = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_out, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_out, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_out, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_out, config.hidden_size, bias=config.attention_bias)
        self.o_proj.is_residual_projection = True
        # Qwen3's QK-norm: one norm over head_dim, shared by the heads, on queries and keys before the rotation
        self.q_norm = build_norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = build_norm(config, self.head_dim) if config.qk_norm else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape)
        key_states = self.k_proj(hidden_states).view(hidden_shape)
        if self.q_norm is not None and self.k_norm is not None:
            # per head, on (B, T, heads, hd) before the transpose, as Qwen3: kernels that flatten rows (Liger's
            # RMSNorm) need the contiguous layout
            query_states, key_states = self.q_norm(query_states), self.k_norm(key_states)
        query_states = query_states.transpose(1, 2)  # (B, nh, T, hd)
        key_states = key_states.transpose(1, 2)  # (B, n_kv, T, hd)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        if position_embeddings is not None:
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            # kwargs: a paged cache (continuous batching) reads and fills in the attention's block tables there
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

        # only the eager computation has weights to return; the model builds the eager mask when they are recorded
        implementation = "eager" if kwargs.get("output_attentions") else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        if implementation == "flex_attention" and key_states.device.type == "cpu" and attention_mask is not None:
            key_states, value_states, attention_mask = pad_keys_for_cpu_flex(key_states, value_states, attention_mask)
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, T, nh * hd)
        return self.o_proj(attn_output), attn_weights


class GPTForgeDecoderLayer(GradientCheckpointingLayer):
    """One block. Pre-norm: x + f(norm(x)) (GPT-2, Llama); post-norm: norm(x + f(x)) (original Transformer), with one
    norm at both joins if `shared_post_norm` (the seed encoder's `self.layer_norm`, applied twice)."""

    def __init__(self, config: GPTForgeConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.self_attn = GPTForgeAttention(config, layer_idx)
        self.mlp = GPTForgeMLP(config)
        self.input_layernorm = build_norm(config)
        # shared: no second module (the same one under a second name would have its tensors saved twice)
        self.post_attention_layernorm = None if config.shared_post_norm else build_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_input = self.input_layernorm(hidden_states) if self.pre_norm else hidden_states
        attn_output, _ = self.self_attn(
            attn_input, position_embeddings=position_embeddings, attention_mask=attention_mask, cache=cache, **kwargs
        )
        hidden_states = hidden_states + self.residual_dropout(attn_output)
        if self.pre_norm:
            assert self.post_attention_layernorm is not None  # only post-norm blocks may share one norm
            mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
            hidden_states = hidden_states + self.residual_dropout(mlp_output)
        else:
            hidden_states = self.input_layernorm(hidden_states)
            mlp_output = self.mlp(hidden_states)
            second_norm = self.post_attention_layernorm or self.input_layernorm
            hidden_states = second_norm(hidden_states + self.residual_dropout(mlp_output))
        return hidden_states

    def residual_dropout(self, x: torch.Tensor) -> torch.Tensor:
        # skipping the call when it is the identity saves a module call per branch in every decode step
        return self.dropout(x) if self.training and self.dropout.p > 0 else x


class GPTForgePreTrainedModel(PreTrainedModel):
    config_class = GPTForgeConfig
    config: GPTForgeConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPTForgeDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    # what `capture_outputs` records through hooks: each block's input and output, each attention's weights (index 1)
    _can_record_outputs = {"hidden_states": GPTForgeDecoderLayer, "attentions": GPTForgeAttention}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, strict: bool = True, **kwargs):
        """Transformers' loader, made strict for gptforge folders: a trunk tensor missing from the checkpoint or unknown
        to the model is a `ValueError` naming the tensors, where Transformers would warn and leave a half-loaded model
        (`check_loaded_keys`; `strict=False` restores the lenient behaviour); a truncated or corrupted safetensors file
        is an `OSError` naming it.

        `output_loading_info=True` is Transformers' contract instead: the model loads whatever matches and comes back
        with `{"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}` for the caller to judge, and
        missing or unknown tensors raise nothing. Tensors of the wrong shape still raise unless `ignore_mismatched_sizes=True`,
        as in Transformers (a `RuntimeError` that is also a `ValueError` naming the folder); they are then listed in
        `mismatched_keys`."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except Exception as exc:
            error = loading_error(exc, pretrained_model_name_or_path)
            if error is None:
                raise
            raise error from exc
        if output_loading_info:
            return model, info
        if strict:
            check_loaded_keys(info, pretrained_model_name_or_path, cls.__name__)
        return model

    # >>> gptforge package only: removed from the flat remote-code copy (gptforge/remote_code.py)
    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Transformers' save, staged in a sibling folder and swapped in whole (`gptforge.storage`): a save killed
        halfway never leaves old and new shards mixed. `push_to_hub=True` saves locally, then uploads."""
        from ..remote_code import save_then_push
        from ..storage import save_atomically

        save = partial(save_atomically, super().save_pretrained)
        if push_to_hub:
            return save_then_push(self, save, save_directory, kwargs)
        return save(save_directory, **kwargs)

    # <<< gptforge package only

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """All initialisation, in one place (the `init.*` functions skip tensors already loaded from a checkpoint).

        | tensor                                   | init                                                      |
        |------------------------------------------|-----------------------------------------------------------|
        | Linear weights, embeddings               | normal(0, initializer_range)                              |
        | o_proj / down_proj weights, if scaled    | normal(0, initializer_range / sqrt(2 * num_hidden_layers)) |
        | zero_init: o/down_proj, untied lm_head   | zeros                                                     |
        | Linear biases                            | zeros                                                     |
        | norm weights / biases                    | ones / zeros                                              |
        | rotary inv_freq (non-persistent buffer)  | recomputed from rope_parameters                           |
        | resid_lambdas / x0_lambdas               | ones / zeros (the embedding shortcut starts switched off) |
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False) and self.config.scale_residual_init:
                std = std / math.sqrt(2 * self.config.num_hidden_layers)
            zeroed = self.config.zero_init and (
                getattr(module, "is_residual_projection", False)
                # a tied head is the embedding, which keeps its normal init
                or (module is getattr(self, "lm_head", None) and not self.config.tie_word_embeddings)
            )
            if zeroed:
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, GPTForgeRMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, GPTForgeModel) and module.config.embedding_shortcut:
            init.ones_(module.resid_lambdas)
            init.zeros_(module.x0_lambdas)
        elif isinstance(module, GPTForgeRotaryEmbedding):
            inv_freq, _ = module.compute_inv_freq(module.config)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)


class GPTForgeModel(GPTForgePreTrainedModel):
    """The trunk: embeddings, blocks and (pre-norm only) a final norm; returns hidden states."""

    def __init__(self, config: GPTForgeConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        if config.position_embedding_type == "rope":
            self.rotary_emb = GPTForgeRotaryEmbedding(config)
        self.embed_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(GPTForgeDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        # post-norm blocks end in a norm already; only pre-norm stacks need a final one
        self.norm = build_norm(config) if config.norm_position == "pre" else nn.Identity()
        if config.embedding_shortcut:
            # nanochat's names: block i reads resid_lambdas[i] * x + x0_lambdas[i] * x0 (x0: the first block's input)
            self.resid_lambdas = nn.Parameter(torch.ones(config.num_hidden_layers))
            self.x0_lambdas = nn.Parameter(torch.zeros(config.num_hidden_layers))
        self.gradient_checkpointing = False
        self.post_init()

    # Not Transformers' `merge_with_config_defaults`: it would set `use_cache` in training too, and pass `is_causal`
    # on to every attention function; gptforge caches only at inference unless told otherwise (below).
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """`output_hidden_states`, `output_attentions` and `return_dict` (keywords, or the config's defaults) are
        Transformers' `capture_outputs`'s: it records the blocks' inputs and outputs and the attention weights by hooks,
        as for Llama."""
        # Attention weights exist only in the eager computation: when they are recorded, this forward runs eager
        # attention whatever the backend (the same outputs, to rounding), so every backend returns them.
        attn_implementation = self.config._attn_implementation
        if kwargs.get("output_attentions", self.config.output_attentions):
            kwargs["output_attentions"] = True  # read by each attention layer
            attn_implementation = "eager"
        check_inputs(self.config, input_ids, inputs_embeds, attention_mask, has_cache=cache is not None)
        # A bidirectional encoder has nothing to cache; a causal model caches at inference unless told otherwise.
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None and self.config.is_causal:
            cache = DynamicCache(config=self.config)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        seq_len = inputs_embeds.shape[1]
        # No padding (no mask, or an all-ones 2D one: one host read) is the usual case in training and decoding; it
        # lets positions be a plain range and, below, SDPA run without a mask.
        no_padding = attention_mask is None or (
            attention_mask.dim() == 2 and not torch.compiler.is_compiling() and bool(attention_mask.all())
        )
        past_seen = None  # cached positions, where known without reading position_ids
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2 and not no_padding:
                # count only real tokens, so a left-padded row gets the positions it would have alone
                position_ids = attention_mask.long().cumsum(-1) - 1
                position_ids = position_ids.masked_fill(attention_mask == 0, 0)[:, -seq_len:]
            else:
                past_seen = cache.get_seq_length() if cache is not None else 0
                position_ids = torch.arange(seq_len, device=inputs_embeds.device).unsqueeze(0) + past_seen

        check_positions(self.config, position_ids)

        hidden_states = inputs_embeds
        if self.config.position_embedding_type == "learned":
            hidden_states = hidden_states + self.embed_positions(position_ids)
        if self.training and self.embed_dropout.p > 0:
            hidden_states = self.embed_dropout(hidden_states)
        position_embeddings = None
        if self.config.position_embedding_type == "rope":
            position_embeddings = self.rotary_emb(hidden_states, position_ids)

        if past_seen is None and attention_mask is None and cache is not None:
            # `generate` passes its own positions and drops an all-ones mask; with a cache, `create_causal_mask` does
            # not read positions (only without one, to find packed sequences), so the mask-free case below holds too
            past_seen = cache.get_seq_length()
        if (
            no_padding
            and past_seen is not None
            and (cache is None or type(cache) is DynamicCache)
            and (past_seen == 0 or seq_len == 1)
            and self.config.is_causal
            and attn_implementation == "sdpa"
        ):
            # A causal prefill or a one-token step over an unpadded, growing cache: `create_causal_mask` returns None
            # here too (SDPA then uses its `is_causal` kernel), after ~20 us of Python per forward.
            mask = None
        else:
            mask_config = self.config
            if attn_implementation != self.config._attn_implementation:
                mask_config = copy.copy(self.config)  # an eager mask for the eager fallback; the model's config stays
                mask_config._attn_implementation = attn_implementation
            if self.config.is_causal:
                mask = create_causal_mask(
                    config=mask_config,
                    inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask,
                    cache=cache,
                    position_ids=position_ids,
                )
            else:
                mask = create_bidirectional_mask(
                    config=mask_config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache
                )

        x0 = hidden_states  # with a cache, the new tokens' embeddings only: each position mixes in its own
        for i, layer in enumerate(self.layers):
            if self.config.embedding_shortcut:
                hidden_states = self.resid_lambdas[i] * hidden_states + self.x0_lambdas[i] * x0
            # position_ids reach the attention function, as in Llama: flash attention and serving engines' own
            # functions find packed sequences (varlen) from them when there is no mask
            hidden_states = layer(
                hidden_states,
                attention_mask=mask,
                position_embeddings=position_embeddings,
                cache=cache,
                position_ids=position_ids,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache if use_cache else None)


class GPTForgeForCausalLM(GPTForgePreTrainedModel, GenerationMixin):
    """Trunk + language-model head; `labels` give the shifted next-token loss through Transformers' loss function
    (so `num_items_in_batch` from the Trainer normalises gradient accumulation correctly).

    NOTE while training (`model.train()`, gradients enabled) with `labels`, the head and the loss run chunked
    (`chunked_causal_lm_loss`): full-vocabulary logits never exist, and the returned `logits` is None. Evaluation
    (`model.eval()`, or `torch.no_grad()`) keeps the plain path and returns logits. `config.loss_chunk_size` sets the
    rows per chunk (None: automatic, 0: always the plain path)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: GPTForgeConfig) -> None:
        super().__init__(config)
        self.model = GPTForgeModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _can_chunk_loss(self) -> bool:
        """The chunked loss reads `lm_head.weight` directly, so it is only taken when that is all the head does: a
        plain `nn.Linear` without hooks (not wrapped by PEFT, FSDP or tensor parallelism), the standard causal-LM loss,
        and gradients recorded outside `torch.compile` (`eager_autograd`; compiled models keep the plain path)."""
        head = self.lm_head
        return (
            self.config.loss_chunk_size != 0
            and type(head) is nn.Linear
            and head.bias is None
            and type(head.weight) is nn.Parameter
            and not (head._forward_hooks or head._forward_pre_hooks)
            and self.loss_function is ForCausalLMLoss
            and eager_autograd()
        )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and tuple(labels.shape) != tuple(hidden_states.shape[:2]):
            raise ValueError(
                f"labels has shape {tuple(labels.shape)}; expected one label per input token, shape "
                f"{tuple(hidden_states.shape[:2])} (the model shifts them itself; use -100 to ignore a position)"
            )
        loss = logits = None
        if labels is not None:
            if kwargs.get("num_items_in_batch") is None:
                # sum / count instead of a mean: the same value, but 0 (not NaN) when every label is -100; counted
                # on the device, so no host sync
                ignore_index = kwargs.get("ignore_index", -100)
                targets = kwargs["shift_labels"] if kwargs.get("shift_labels") is not None else labels[:, 1:]
                kwargs["num_items_in_batch"] = (targets != ignore_index).sum().clamp(min=1)
            all_positions = isinstance(logits_to_keep, int) and logits_to_keep == 0
            if self.training and all_positions and self._can_chunk_loss():
                rows = self.config.loss_chunk_size
                softcap = self.config.final_logit_softcapping
                loss = chunked_causal_lm_loss(
                    hidden_states, self.lm_head.weight, labels, chunk_rows=rows, softcap=softcap, **kwargs
                )
        if loss is None:
            # generate asks for the last position only: project just that onto the (large) vocabulary
            logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))
            if self.config.final_logit_softcapping is not None:  # Gemma 2's cap, as in every path to the logits
                cap = self.config.final_logit_softcapping
                logits = torch.tanh(logits / cap) * cap
            if labels is not None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def last_token_index(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, pad_token_id: int | None, seq_len: int
) -> torch.Tensor | int:
    """Index of each row's last real token: from the attention mask when there is one (left or right padding),
    else from the pad id (GPT-2's rule), else the last position."""
    if attention_mask is not None and attention_mask.dim() == 2:
        positions = torch.arange(seq_len, device=attention_mask.device)
        return (positions * attention_mask[:, -seq_len:].to(positions.dtype)).argmax(-1)
    if input_ids is not None and pad_token_id is not None:
        positions = torch.arange(seq_len, device=input_ids.device)
        return (positions * (input_ids != pad_token_id).to(positions.dtype)).argmax(-1)
    return seq_len - 1


class GPTForgeForSequenceClassification(GPTForgePreTrainedModel):
    """Classifies from the last real token's hidden state, as GPT-2 does (a causal model has seen everything there).

    Not Transformers' `GenericForSequenceClassification`: that one finds the last token from the pad id alone (wrong
    when the pad id is also the eos id, and an error for a batch without one); this one reads the attention mask."""

    def __init__(self, config: GPTForgeConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = GPTForgeModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        logits = self.score(outputs.last_hidden_state)  # (B, T, num_labels)
        batch_size, seq_len = logits.shape[:2]
        last = last_token_index(input_ids, attention_mask, self.config.pad_token_id, seq_len)
        pooled_logits = logits[torch.arange(batch_size, device=logits.device), last]  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled_logits, config=self.config)

        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class GPTForgeForTokenClassification(GenericForTokenClassification, GPTForgePreTrainedModel):
    """A label per token (tagging); pairs naturally with the bidirectional `encoder` preset. Forward and loss are
    Transformers' `GenericForTokenClassification`'s."""

    def __init__(self, config: GPTForgeConfig) -> None:
        # past the generic `__init__` to PreTrainedModel's: `AutoModel.from_config` finds no trunk in remote code
        super(GenericForTokenClassification, self).__init__(config)
        self.num_labels = config.num_labels
        self.model = GPTForgeModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class GPTForgeForQuestionAnswering(GenericForQuestionAnswering, GPTForgePreTrainedModel):
    """Extractive QA: start and end logits per token (`qa_outputs`, as Llama's); forward and loss are Transformers'
    `GenericForQuestionAnswering`'s. The trunk sits under `model` (Llama's QA head calls it `transformer`)."""

    def __init__(self, config: GPTForgeConfig) -> None:
        # past the generic `__init__` to PreTrainedModel's: `AutoModel.from_config` finds no trunk in remote code
        super(GenericForQuestionAnswering, self).__init__(config)
        self.model = GPTForgeModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()


__all__ = [
    "GPTForgePreTrainedModel",
    "GPTForgeModel",
    "GPTForgeForCausalLM",
    "GPTForgeForSequenceClassification",
    "GPTForgeForTokenClassification",
    "GPTForgeForQuestionAnswering",
]
