"""GPTForgeConfig: one config that expresses GPT-2, Llama-style decoders and a classic post-norm encoder.

Field names follow Transformers' own (`hidden_size`, `num_key_value_heads`, `rope_parameters`, ...) so that tools
which read configs generically (PEFT, vLLM, accelerate's size estimates) understand them; GPT-2's names are accepted
as aliases through `attribute_map`, as `GPT2Config` does.

Like every Transformers 5 config this is a keyword-only dataclass: defaults live on the fields, derived values are
filled in `__post_init__`, and cross-field checks live in `validate_architecture`, which raises a plain `ValueError`
naming the field and the value.
"""

import copy
import math
import os
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

_POSITION_TYPES = ("rope", "learned", "none")
_NORM_TYPES = ("rmsnorm", "layernorm")
_NORM_POSITIONS = ("pre", "post")
_MLP_TYPES = ("gated", "plain")

# Where Transformers finds each class among a saved folder's flat remote-code files (`trust_remote_code=True`). Every
# config carries it, not only saved ones, so that a save and a load give back the same `to_dict()`.
AUTO_MAP = {
    "AutoConfig": "configuration_gptforge.GPTForgeConfig",
    "AutoModel": "modeling_gptforge.GPTForgeModel",
    "AutoModelForCausalLM": "modeling_gptforge.GPTForgeForCausalLM",
    "AutoModelForSequenceClassification": "modeling_gptforge.GPTForgeForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_gptforge.GPTForgeForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_gptforge.GPTForgeForQuestionAnswering",
}

# The classic encoder's overrides, which the seed document's encoder shares but for its attention (see PRESETS).
ENCODER: dict[str, Any] = dict(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=512,
    position_embedding_type="learned",
    norm_type="layernorm",
    norm_eps=1e-5,
    norm_position="post",
    is_causal=False,
    mlp_type="plain",
    hidden_act="relu",
    attention_bias=True,
    mlp_bias=True,
    tie_word_embeddings=True,
    attention_dropout=0.1,
    hidden_dropout=0.1,
)

# Named sizes. Each entry is a set of overrides on the field defaults below; the comment gives the parameter count.
PRESETS: dict[str, dict[str, Any]] = {
    # 1.8M params: the fast-test and demo size (a Llama-style block with GQA).
    "tiny": dict(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    # 124M params: GPT-2 small, exactly (learned positions, LayerNorm, GELU-tanh, biases, tied head).
    "gpt2-124m": dict(
        vocab_size=50257,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=1024,
        position_embedding_type="learned",
        norm_type="layernorm",
        norm_eps=1e-5,
        mlp_type="plain",
        hidden_act="gelu_new",
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        scale_residual_init=True,
        attention_dropout=0.1,
        hidden_dropout=0.1,
        embedding_dropout=0.1,
        bos_token_id=50256,
        eos_token_id=50256,
    ),
    # 355M params: GPT-2 medium.
    "gpt2-355m": dict(
        vocab_size=50257,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        max_position_embeddings=1024,
        position_embedding_type="learned",
        norm_type="layernorm",
        norm_eps=1e-5,
        mlp_type="plain",
        hidden_act="gelu_new",
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        scale_residual_init=True,
        attention_dropout=0.1,
        hidden_dropout=0.1,
        embedding_dropout=0.1,
        bos_token_id=50256,
        eos_token_id=50256,
    ),
    # 34M params (with a 32k vocabulary): Llama block, GQA 3:1.
    "llama-34m": dict(
        vocab_size=32000,
        hidden_size=384,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    ),
    # 135M params (with a 49k vocabulary, tied): Llama block, GQA 3:1 (SmolLM-135M's shape).
    "llama-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    ),
    # 362M params (with a 49k vocabulary, tied): Llama block, GQA 3:1 (SmolLM-360M's shape).
    "llama-360m": dict(
        vocab_size=49152,
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    ),
    # 4.3M params: a classic bidirectional post-norm encoder, the layer of `nn.TransformerEncoderLayer(norm_first=False,
    # activation="relu")`, with learned positions; for classification and tagging heads.
    "encoder": ENCODER,
    # 4.3M params: the encoder of the document gptforge grew from (its `EncoderLayer`): post-norm with one LayerNorm
    # shared by both residual joins, a single head over the whole width without 1/sqrt(d) scaling, a ReLU MLP, dropout
    # on both branches. It has no output projection: `from_seed_encoder` sets o_proj to the identity (zero bias); a
    # fresh model trains its o_proj like any other. Learned positions, which the document's layers leave to the caller.
    "seed-encoder": {
        **ENCODER,
        "num_attention_heads": 1,
        "attention_scale": 1.0,
        "shared_post_norm": True,
        "attention_dropout": 0.0,
    },
}


def naming_file(exc: ValueError, where: str | os.PathLike, subfolder: str | None) -> ValueError:
    """`exc` with the config file it came from (a folder's `config.json`) in front of its message."""
    where = os.fspath(where)
    if not where.endswith(".json"):
        where = os.path.join(where, subfolder or "", "config.json")
    return ValueError(f"{where}: {exc}")


@strict
class GPTForgeConfig(PreTrainedConfig):
    """Configuration of every gptforge model; see `PRESETS` and `from_preset` for named sizes.

    The defaults describe a 12-layer Llama-style decoder (RoPE, RMSNorm, SwiGLU, no biases, untied head). GPT-2 is
    `from_preset("gpt2-124m")`; the post-norm encoder is `from_preset("encoder")`.

    The switches of the small-model training recipes (modded-nanogpt's speedrun, nanochat), each off by default so
    that it can be ablated alone:
    - `qk_norm=True`: the config's norm (`norm_type`, `norm_eps`) over each head's query and key, before the
      rotation (Qwen3's `q_norm` / `k_norm`, weights of shape (head_dim,)). With RoPE, RMSNorm, a gated MLP and no
      MLP bias this is Qwen3's block, and `to_transformers` exports it as `Qwen3ForCausalLM`.
    - `hidden_act="relu2"`: ReLU squared (`relu(x) ** 2`, Transformers' `ACT2FN["relu2"]`), in a plain or gated MLP.
    - `zero_init=True`: the residual-output projections (`o_proj`, `down_proj`) and an untied LM head start at zero,
      so each block starts as the identity and the first logits are uniform. Only the initialisation changes: the
      forward is the plain model's, and such a model exports as any other.
    - `final_logit_softcapping=c`: the LM head's logits become `c * tanh(logits / c)` (Gemma 2's name and formula;
      nanochat uses 15, modded-nanogpt 15 to 30), in every path: forward, generation and the chunked training loss.
    - `embedding_shortcut=True`: modded-nanogpt's and nanochat's x0 mixing: block i reads
      `resid_lambdas[i] * x + x0_lambdas[i] * x0`, where x0 is the first block's input (the token embedding, plus
      learned positions where there are any), with learned per-layer scalars on the trunk starting at (1, 0), i.e.
      as the plain model. nanochat RMS-normalises the embedding first; here x0 is left as the blocks' input is.
    """

    model_type = "gptforge"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    # GPT-2 / nanoGPT spellings and the Llama/GPT-2 epsilon names read through to our fields.
    attribute_map = {
        "n_embd": "hidden_size",
        "n_layer": "num_hidden_layers",
        "n_head": "num_attention_heads",
        "n_positions": "max_position_embeddings",
        "n_inner": "intermediate_size",
        "rms_norm_eps": "norm_eps",
        "layer_norm_epsilon": "norm_eps",
        "layer_norm_eps": "norm_eps",
    }
    # Same plans as Llama: the parameter names are the same, so tensor/pipeline parallelism work unchanged.
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    # --- sizes ---
    vocab_size: int = 50257
    hidden_size: int = 768
    # None: 4 * hidden for a plain MLP, the Llama rule (8/3 * hidden, rounded up to 256) for a gated one
    intermediate_size: int | None = None
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    # None: multi-head attention; fewer than num_attention_heads gives GQA, 1 gives MQA
    num_key_value_heads: int | None = None
    # None: hidden_size // num_attention_heads; set it to decouple head width from hidden size (Qwen3/Gemma style)
    head_dim: int | None = None
    max_position_embeddings: int = 2048

    # --- architecture switches ---
    position_embedding_type: str = "rope"  # "rope" (Llama), "learned" (GPT-2, encoder) or "none"
    rope_parameters: dict | None = None  # Transformers' format; None: {"rope_type": "default", "rope_theta": 1e4}
    norm_type: str = "rmsnorm"  # "rmsnorm" (Llama) or "layernorm" (GPT-2, encoder)
    norm_eps: float = 1e-6
    norm_bias: bool = True  # LayerNorm only: nanoGPT-style bias-free LayerNorm sets this False
    norm_position: str = "pre"  # "pre" (GPT-2, Llama; adds a final norm) or "post" (original Transformer)
    shared_post_norm: bool = False  # post-norm only: one norm at both residual joins of a block (the seed encoder)
    is_causal: bool = True  # False: bidirectional attention (encoder)
    mlp_type: str = "gated"  # "gated": down(act(gate(x)) * up(x)) (SwiGLU); "plain": down(act(up(x)))
    hidden_act: str = "silu"  # any key of transformers.activations.ACT2FN; "relu2": ReLU squared (modded-nanogpt)
    attention_bias: bool = False
    qk_norm: bool = False  # a norm over head_dim on each head's query and key, before RoPE (Qwen3, modded-nanogpt)
    # multiplies q.k before the softmax; None: 1/sqrt(head_dim). The seed encoder does not scale (1.0).
    attention_scale: float | None = None
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    # modded-nanogpt / nanochat: each block's input is resid_lambdas[i] * x + x0_lambdas[i] * x0 (learned, from 1, 0)
    embedding_shortcut: bool = False
    # None: raw logits; c > 0: c * tanh(logits / c) on the LM head's output (Gemma 2's softcapping)
    final_logit_softcapping: float | None = None

    # --- regularisation ---
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0  # on each residual branch (GPT-2's resid_pdrop)
    embedding_dropout: float = 0.0  # GPT-2's embd_pdrop
    classifier_dropout: float | None = None  # token-classification head; None: hidden_dropout

    # --- initialisation ---
    initializer_range: float = 0.02
    # GPT-2: residual-output projections start with std / sqrt(2 * num_hidden_layers), so the residual stream's
    # variance does not grow with depth.
    scale_residual_init: bool = False
    # modded-nanogpt / nanochat: o_proj, down_proj and an untied lm_head start at zero (a tied head is the embedding,
    # which is not zeroed); takes precedence over scale_residual_init for those projections
    zero_init: bool = False

    # --- performance ---
    # rows per chunk of the chunked LM head + loss used in training (full-vocabulary logits never exist at once);
    # None: automatic (~16 MiB of fp32 logits per chunk), 0: always the plain head and loss
    loss_chunk_size: int | None = None

    # --- generation / tokens ---
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        # GPT-2 spellings passed as keywords (n_head=...) arrive here, not as fields: apply them before deriving
        for alias, field_name in self.attribute_map.items():
            if alias in kwargs:
                setattr(self, field_name, kwargs.pop(alias))
        # Checked before deriving head_dim: with head_dim left implicit, hidden_size must split evenly.
        if (
            self.head_dim is None
            and min(self.num_attention_heads, self.hidden_size) > 0
            and self.hidden_size % self.num_attention_heads
        ):
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}; "
                "choose sizes that divide, or set head_dim explicitly"
            )
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and min(self.num_attention_heads, self.hidden_size) > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            if self.mlp_type == "gated":
                self.intermediate_size = 256 * ((int(8 * self.hidden_size / 3) + 255) // 256)
            else:
                self.intermediate_size = 4 * self.hidden_size
        if self.rope_parameters is None and self.position_embedding_type == "rope":
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        self.validate_architecture()
        super().__post_init__(**kwargs)
        if self.position_embedding_type != "rope":
            # the base class fills in default RoPE parameters for every config; they mean nothing here
            self.rope_parameters = None
        if getattr(self, "auto_map", None) is None:  # a loaded config keeps the map its file holds
            self.auto_map = dict(AUTO_MAP)

    def validate_architecture(self) -> None:
        """Cross-field checks; each failure is a `ValueError` naming the field and its value."""
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if value is None or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
        assert self.num_key_value_heads is not None and self.head_dim is not None  # the loop above rejects None
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads={self.num_key_value_heads} must divide "
                f"num_attention_heads={self.num_attention_heads} (grouped-query attention shares each kv head "
                "among an equal number of query heads)"
            )
        for name, allowed in (
            ("position_embedding_type", _POSITION_TYPES),
            ("norm_type", _NORM_TYPES),
            ("norm_position", _NORM_POSITIONS),
            ("mlp_type", _MLP_TYPES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {name}={getattr(self, name)!r}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not a known activation; "
                f"expected one of transformers.activations.ACT2FN: {sorted(ACT2FN)}"
            )
        if self.position_embedding_type == "rope" and self.head_dim % 2:
            raise ValueError(
                f"head_dim must be even with rotary embeddings (it rotates pairs), got head_dim={self.head_dim}"
            )
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be positive, got norm_eps={self.norm_eps!r}")
        if self.shared_post_norm and self.norm_position != "post":
            raise ValueError(
                f"shared_post_norm=True needs norm_position='post', got norm_position={self.norm_position!r} (a "
                "pre-norm block's two norms feed different branches; only post-norm joins can share one)"
            )
        if self.attention_scale is not None and not (math.isfinite(self.attention_scale) and self.attention_scale > 0):
            raise ValueError(
                f"attention_scale must be None (1/sqrt(head_dim)) or a positive number, got "
                f"attention_scale={self.attention_scale!r}"
            )
        for name in ("attention_dropout", "hidden_dropout", "embedding_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {name}={value!r}")
        if self.loss_chunk_size is not None and self.loss_chunk_size < 0:
            raise ValueError(
                f"loss_chunk_size must be None, 0 or positive, got loss_chunk_size={self.loss_chunk_size}"
            )
        cap = self.final_logit_softcapping
        if cap is not None and not (math.isfinite(cap) and cap > 0):
            raise ValueError(
                f"final_logit_softcapping must be None (no cap) or a positive finite number, got "
                f"final_logit_softcapping={cap!r}"
            )
        if self.initializer_range < 0:
            raise ValueError(f"initializer_range must be >= 0, got initializer_range={self.initializer_range!r}")

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "GPTForgeConfig":
        """Refuse another model's config instead of building a gptforge model from fields that mean something else,
        and name the file an invalid config came from (AutoConfig passes its folder as `name_or_path`)."""
        try:
            model_type = config_dict.get("model_type", cls.model_type)
            if model_type != cls.model_type:
                raise ValueError(
                    f"model_type={model_type!r} is not a gptforge config (expected model_type='gptforge')"
                )
            return super().from_dict(config_dict, **kwargs)
        except ValueError as exc:
            if not kwargs.get("name_or_path"):
                raise
            raise naming_file(exc, kwargs["name_or_path"], kwargs.get("subfolder")) from exc

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "GPTForgeConfig":
        """As Transformers' loader, with an invalid file named in the error. The source is not recorded in the config
        (`name_or_path`), as with native configs, so a save and a load give back the same `to_dict()`."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ValueError as exc:
            if kwargs.get("name_or_path"):  # named in `from_dict` already
                raise
            raise naming_file(exc, pretrained_model_name_or_path, kwargs.get("subfolder")) from exc

    @classmethod
    def list_presets(cls) -> list[str]:
        """Names accepted by `from_preset`, sorted."""
        return sorted(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GPTForgeConfig":
        """A config for the named preset, with any field overridden by keyword (`from_preset("tiny", vocab_size=512)`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {cls.list_presets()}")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})

    # >>> gptforge package only: removed from the flat remote-code copy (gptforge/remote_code.py)
    def save_pretrained(self, save_directory, push_to_hub=False, **kwargs):
        """Also writes `auto_map` and the flat remote-code files, so the folder loads without gptforge installed
        (a model's `save_pretrained` saves its config through here)."""
        from ..remote_code import save_pretrained_with_code

        return save_pretrained_with_code(self, super().save_pretrained, save_directory, push_to_hub, **kwargs)

    # <<< gptforge package only


__all__ = ["GPTForgeConfig", "PRESETS", "AUTO_MAP"]
