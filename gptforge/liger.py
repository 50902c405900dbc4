"""Liger Kernel's Triton kernels for gptforge (`pip install gptforge[gpu]`), through Transformers' own switch.

`TrainingArguments(use_liger_kernel=True)` makes `Trainer` call Liger's `_apply_liger_kernel_to_instance`, which looks
the model's `model_type` up in Liger's table of patch functions and, for a type it does not know, only logs at INFO
level: without registration the switch would do nothing for gptforge, silently. `register_liger_kernel()` adds
`apply_liger_kernel_to_gptforge` to that table; the training commands' `training_arguments` call it whenever
`use_liger_kernel=True`, and fall back to the plain path with a warning when the package is missing.

What is applied depends on the config, because gptforge is one class for several architectures; each kernel needs the
Llama shape it was written for, and a kernel whose shape does not match is skipped with a warning naming the field:
- RMSNorm (`LigerRMSNorm`, Llama casting) on every norm: needs `norm_type="rmsnorm"`;
- SwiGLU (`LigerSwiGLUMLP`) on every MLP: needs `mlp_type="gated"` and `hidden_act` silu/swish;
- RoPE (`liger_rotary_pos_emb`): needs `position_embedding_type="rope"`;
- fused linear cross-entropy (`LigerForCausalLMLoss`) in place of gptforge's own chunked LM-head loss, on the path
  that loss takes (training with labels, outside `torch.compile`; `loss_chunk_size=0` turns both off); not with
  `final_logit_softcapping`, which gptforge's own chunked loss applies.
As Liger does for Llama, RoPE and the loss are patched in the model's module (every gptforge model of the process),
the norms and MLPs per instance. The kernels are Triton: they run on CUDA (and ROCm/XPU builds), not on the CPU.
"""

import sys
import warnings
from typing import Any

from torch import nn

# gptforge's `model_type`; Liger's table is keyed by it
MODEL_TYPE = "gptforge"


def register_liger_kernel() -> bool:
    """Add gptforge to Liger Kernel's model-type table; False (and nothing changed) when `liger_kernel` cannot be
    imported. Idempotent."""
    try:
        from liger_kernel.transformers import monkey_patch
    except ImportError:
        return False
    monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN[MODEL_TYPE] = apply_liger_kernel_to_gptforge
    return True


def kernel_mismatches(config: Any) -> dict[str, str]:
    """{kernel: why it does not fit `config`} for the kernels `apply_liger_kernel_to_gptforge` would skip."""
    skipped = {}
    if config.norm_type != "rmsnorm":
        skipped["rms_norm"] = f"norm_type={config.norm_type!r} (Liger's RMSNorm needs 'rmsnorm')"
    if config.mlp_type != "gated" or config.hidden_act not in ("silu", "swish"):
        skipped["swiglu"] = (
            f"mlp_type={config.mlp_type!r}, hidden_act={config.hidden_act!r} (Liger's SwiGLU needs 'gated' with silu)"
        )
    if config.position_embedding_type != "rope":
        skipped["rope"] = f"position_embedding_type={config.position_embedding_type!r} (Liger's RoPE needs 'rope')"
    if not config.is_causal or config.loss_chunk_size == 0:
        skipped["fused_linear_cross_entropy"] = (
            "is_causal=False (no causal-LM loss)" if not config.is_causal else "loss_chunk_size=0 (plain LM head)"
        )
    if getattr(config, "final_logit_softcapping", None) is not None:
        # gptforge hands Liger's loss no cap, so the fused loss would train on uncapped logits
        skipped["fused_linear_cross_entropy"] = (
            f"final_logit_softcapping={config.final_logit_softcapping!r} (gptforge's Liger loss has no softcapping)"
        )
    return skipped


def apply_liger_kernel_to_gptforge(
    rope: bool = True,
    cross_entropy: bool = False,
    fused_linear_cross_entropy: bool = True,
    rms_norm: bool = True,
    swiglu: bool = True,
    model: nn.Module | None = None,
) -> None:
    """Liger's patch function for gptforge, with the keywords of `apply_liger_kernel_to_llama` (which Liger passes on
    from `TrainingArguments.liger_kernel_config`). Needs the model instance: what applies depends on its config."""
    if model is None:
        raise ValueError(
            "apply_liger_kernel_to_gptforge needs the model instance (model=...): gptforge is one class for several "
            "architectures, and which kernels fit depends on its config"
        )
    from liger_kernel.transformers.model.loss_utils import LigerForCausalLMLoss
    from liger_kernel.transformers.monkey_patch import _patch_rms_norm_module, _patch_swiglu_module
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP

    config = model.config
    wanted = {"rope": rope, "fused_linear_cross_entropy": fused_linear_cross_entropy, "rms_norm": rms_norm}
    wanted["swiglu"] = swiglu
    skipped = {name: why for name, why in kernel_mismatches(config).items() if wanted[name]}
    if cross_entropy:
        skipped["cross_entropy"] = "gptforge's LM-head loss never builds the logits it would read; use the fused one"
    if skipped:
        warnings.warn(
            "Liger Kernel: not applied to this gptforge model: "
            + "; ".join(f"{name}: {why}" for name, why in skipped.items()),
            stacklevel=2,
        )
    modeling = sys.modules[type(model).__module__]  # the package module or a remote-code copy of it
    base = getattr(model, model.base_model_prefix, model)
    if rms_norm and "rms_norm" not in skipped:
        for module in base.modules():
            if isinstance(module, modeling.GPTForgeRMSNorm):
                _patch_rms_norm_module(module, eps=module.variance_epsilon)
    if swiglu and "swiglu" not in skipped:
        for layer in base.layers:
            _patch_swiglu_module(layer.mlp, LigerSwiGLUMLP)
    if rope and "rope" not in skipped:
        setattr(modeling, "apply_rotary_pos_emb", liger_rotary_pos_emb)  # noqa: B010  (a module looked up at run time)
    if fused_linear_cross_entropy and "fused_linear_cross_entropy" not in skipped:

        def liger_causal_lm_loss(hidden_states, weight, labels, chunk_rows=None, **kwargs):
            return LigerForCausalLMLoss(
                hidden_states=hidden_states,
                lm_head_weight=weight,
                labels=labels,
                hidden_size=hidden_states.shape[-1],
                num_items_in_batch=kwargs.get("num_items_in_batch"),
                ignore_index=kwargs.get("ignore_index", -100),
                shift_labels=kwargs.get("shift_labels"),
            )

        setattr(modeling, "chunked_causal_lm_loss", liger_causal_lm_loss)  # noqa: B010
