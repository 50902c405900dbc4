"""The class attributes and names that PEFT, FSDP and tensor/pipeline parallelism find without configuration."""

import re

import pytest
import torch
from _helpers import arch_config
from peft import LoraConfig, get_peft_model

from gptforge import GPTForgeForCausalLM, GPTForgeForSequenceClassification, GPTForgeModel


def test_lora_needs_no_target_modules():
    model = GPTForgeForCausalLM(arch_config("llama"))
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4))
    adapted = {m.group(1) for name, _ in peft_model.named_parameters() if (m := re.search(r"\.(\w+)\.lora_A\.", name))}
    assert adapted == {"q_proj", "v_proj"}
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_lora_on_a_classifier_also_trains_the_new_head():
    model = GPTForgeForSequenceClassification(arch_config("gpt2", num_labels=3))
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4))
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("score" in name for name in trainable)  # PEFT saves `score` by its standard name


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tensor_parallel_plan_names_real_modules(arch):
    config = arch_config(arch)
    model = GPTForgeModel(config)
    names = [name for name, _ in model.named_modules()]
    for pattern in config.base_model_tp_plan:
        if "gate_proj" in pattern and config.mlp_type == "plain":
            continue  # a plain MLP has no gate
        regex = re.compile("^" + re.escape(pattern).replace(r"\*", r"\d+") + "$")
        assert any(regex.match(name) for name in names), pattern
    for attribute in config.base_model_pp_plan:
        assert isinstance(getattr(model, attribute), torch.nn.Module), attribute
    assert isinstance(GPTForgeForCausalLM(config).get_submodule("lm_head"), torch.nn.Linear)


def test_no_split_modules_name_the_decoder_block():
    model = GPTForgeForCausalLM(arch_config("llama"))
    classes = {type(m).__name__ for m in model.modules()}
    assert set(model._no_split_modules) <= classes
    assert model.supports_gradient_checkpointing and model._supports_attention_backend
