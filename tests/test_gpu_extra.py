"""The optional GPU kernels (`gptforge[gpu]`: Liger Kernel): registration with Liger's model-type table, which kernels
apply to which config, and the fallback when the package is missing. Liger's Triton kernels cannot run on a CPU, so
these tests check what is patched, not the kernels' numbers."""

import sys
import types

import pytest
import torch
from _helpers import arch_config
from datasets import Dataset
from transformers.integrations.liger import apply_liger_kernel

import gptforge.modeling.modeling_gptforge as modeling
from gptforge import GPTForgeForCausalLM
from gptforge.liger import apply_liger_kernel_to_gptforge, kernel_mismatches, register_liger_kernel
from gptforge.training.arguments import training_arguments
from gptforge.training.encoding import causal_lm_collator
from gptforge.training.options import TrainerOptions
from gptforge.training.trainer import GPTForgeTrainer


@pytest.fixture
def restore_module_patches(monkeypatch):
    """Liger patches RoPE and the loss in the modeling module; put them back after the test."""
    for name in ("apply_rotary_pos_emb", "chunked_causal_lm_loss"):
        monkeypatch.setattr(modeling, name, getattr(modeling, name))


@pytest.fixture
def no_liger(monkeypatch):
    """`import liger_kernel` fails, as on a machine without the extra."""
    for name in list(sys.modules):
        if name == "liger_kernel" or name.startswith("liger_kernel."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)


def test_missing_package_falls_back_to_the_plain_path_with_a_warning(no_liger, tmp_path):
    assert register_liger_kernel() is False
    options = TrainerOptions(batch_size=2, max_steps=2, logging_steps=1, progress=False, precision="fp32")
    with pytest.warns(
        UserWarning, match=r"use_liger_kernel=True, but liger_kernel cannot be imported .*gptforge\[gpu\]"
    ):
        args = training_arguments(tmp_path, options, save_strategy="no", use_liger_kernel=True)
    assert args.use_liger_kernel is False
    ids = torch.randint(0, 128, (4, 16))
    model = GPTForgeForCausalLM(arch_config("llama"))
    trainer = GPTForgeTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": ids.tolist()}),
        data_collator=causal_lm_collator,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert type(model.model.layers[0].mlp).forward is modeling.GPTForgeMLP.forward  # nothing patched


def test_kernel_mismatches_name_the_fields():
    assert kernel_mismatches(arch_config("llama")) == {}
    assert kernel_mismatches(arch_config("gpt2")) == {
        "rms_norm": "norm_type='layernorm' (Liger's RMSNorm needs 'rmsnorm')",
        "swiglu": "mlp_type='plain', hidden_act='gelu_new' (Liger's SwiGLU needs 'gated' with silu)",
        "rope": "position_embedding_type='learned' (Liger's RoPE needs 'rope')",
    }
    assert kernel_mismatches(arch_config("llama", loss_chunk_size=0)) == {
        "fused_linear_cross_entropy": "loss_chunk_size=0 (plain LM head)"
    }


def fake_liger(monkeypatch) -> types.SimpleNamespace:
    """A stand-in `liger_kernel` with the names gptforge uses, recording what is patched."""
    table: dict = {}
    calls = types.SimpleNamespace(table=table, norms=[], mlps=[])

    def rms(*args, **kwargs):
        raise AssertionError("the fake RoPE is never run")

    modules = {
        "liger_kernel": types.ModuleType("liger_kernel"),
        "liger_kernel.transformers": types.ModuleType("liger_kernel.transformers"),
        "liger_kernel.transformers.monkey_patch": types.SimpleNamespace(
            MODEL_TYPE_TO_APPLY_LIGER_FN=table,
            _patch_rms_norm_module=lambda module, eps: calls.norms.append((module, eps)),
            _patch_swiglu_module=lambda module, cls: calls.mlps.append((module, cls)),
        ),
        "liger_kernel.transformers.model.loss_utils": types.SimpleNamespace(LigerForCausalLMLoss=object()),
        "liger_kernel.transformers.rope": types.SimpleNamespace(liger_rotary_pos_emb=rms),
        "liger_kernel.transformers.swiglu": types.SimpleNamespace(LigerSwiGLUMLP=object()),
    }
    modules["liger_kernel.transformers"].monkey_patch = modules["liger_kernel.transformers.monkey_patch"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    calls.rope = rms
    return calls


def test_registration_and_patching_with_a_stand_in_package(monkeypatch, restore_module_patches):
    calls = fake_liger(monkeypatch)
    assert register_liger_kernel() is True
    assert calls.table == {"gptforge": apply_liger_kernel_to_gptforge}
    model = GPTForgeForCausalLM(arch_config("llama"))
    apply_liger_kernel_to_gptforge(model=model)
    norms = [m for m in model.modules() if isinstance(m, modeling.GPTForgeRMSNorm)]
    assert [m for m, _ in calls.norms] == norms and len(norms) == 2 * model.config.num_hidden_layers + 1
    assert [m for m, _ in calls.mlps] == [layer.mlp for layer in model.model.layers]
    assert modeling.apply_rotary_pos_emb is calls.rope
    assert modeling.chunked_causal_lm_loss.__name__ == "liger_causal_lm_loss"


def test_mismatched_shape_is_skipped_with_a_warning(monkeypatch, restore_module_patches):
    calls = fake_liger(monkeypatch)
    original_rope = modeling.apply_rotary_pos_emb
    model = GPTForgeForCausalLM(arch_config("gpt2"))
    with pytest.warns(UserWarning, match=r"not applied to this gptforge model: rms_norm: norm_type='layernorm'"):
        apply_liger_kernel_to_gptforge(model=model)
    assert calls.norms == [] and calls.mlps == []
    assert modeling.apply_rotary_pos_emb is original_rope
    # the causal-LM loss still fits a GPT-2-shaped model
    assert modeling.chunked_causal_lm_loss.__name__ == "liger_causal_lm_loss"


def test_apply_needs_the_instance():
    with pytest.raises(ValueError, match=r"needs the model instance \(model=...\)"):
        apply_liger_kernel_to_gptforge()


def test_trainer_applies_the_real_package_to_gptforge(tmp_path, restore_module_patches):
    """With liger-kernel installed: what `Trainer.train()` runs first under `use_liger_kernel=True`
    (`transformers.integrations.liger.apply_liger_kernel`) patches a gptforge model, registered by the factory.
    Patching runs no kernel, so this works on a CPU; training would not (Triton)."""
    pytest.importorskip("liger_kernel.transformers", reason="liger-kernel (gptforge[gpu]) is not installed")
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    options = TrainerOptions(batch_size=2, max_steps=1, progress=False, precision="fp32")
    args = training_arguments(tmp_path, options, save_strategy="no", use_liger_kernel=True)
    assert args.use_liger_kernel is True
    model = GPTForgeForCausalLM(arch_config("llama"))
    apply_liger_kernel(model, args.liger_kernel_config)
    assert model.model.layers[0].mlp._get_name() == "LigerSwiGLUMLP"
    assert model.model.norm._get_name() == "LigerRMSNorm"
    assert modeling.apply_rotary_pos_emb is liger_rotary_pos_emb
    assert modeling.chunked_causal_lm_loss.__name__ == "liger_causal_lm_loss"
