"""Quantized loading on CPU: bitsandbytes 4-bit (NF4) and 8-bit (LLM.int8) through `BitsAndBytesConfig`, torchao
int8 weight-only through `TorchAoConfig`, and QLoRA (PEFT LoRA on the 4-bit model), with gptforge installed and
without it (remote code only).

bitsandbytes runs here on its CPU backend (no CUDA). Its 4-bit CPU path packs weights in blocks of 64 input features,
so the model here has hidden size 64 (a smaller one fails inside bitsandbytes, not in gptforge). The logits bounds
below are the errors measured on this model with some margin, relative to the largest logit.
"""

import pytest
from _consumers import run_python, save_consumer_model

# largest |quantized - float| logit over the largest |float| logit, measured: 4-bit 0.145, 8-bit 0.011, int8 wo 0.010
RELATIVE_BOUND = {"bnb-4bit": 0.3, "bnb-8bit": 0.05, "torchao-int8": 0.05}
NEW_TOKENS = 4

QUANT_SCRIPT = r"""
import json, sys
import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TorchAoConfig
from torchao.quantization import Int8WeightOnlyConfig

folder, new_tokens, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
reference = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    ref_logits = reference(ids).logits
configs = {
    "bnb-4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
    "bnb-8bit": BitsAndBytesConfig(load_in_8bit=True),
    "torchao-int8": TorchAoConfig(Int8WeightOnlyConfig()),
}
result = {}
for name, quantization_config in configs.items():
    model = AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=True, quantization_config=quantization_config, device_map="cpu"
    ).eval()
    linears = {n: m for n, m in model.named_modules() if n.startswith("model.layers.") and hasattr(m, "weight")
               and n.rsplit(".", 1)[-1].endswith("_proj")}
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    result[name] = {
        "module": type(model).__module__,
        "linear_types": sorted({f"{type(m).__name__}/{type(m.weight).__name__}" for m in linears.values()}),
        "num_linears": len(linears),
        "lm_head": f"{type(model.lm_head).__name__}/{type(model.lm_head.weight).__name__}",
        "relative_error": ((logits - ref_logits).abs().max() / ref_logits.abs().max()).item(),
        "generated": generated[0].tolist(),
        "first_token_is_argmax": generated[0, ids.shape[1]].item() == logits[0, -1].argmax().item(),
    }

# QLoRA: LoRA adapters on the 4-bit model, two optimiser steps
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, quantization_config=configs["bnb-4bit"],
                                             device_map="cpu")
model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear"))
model.train()
trainable = [p for p in model.parameters() if p.requires_grad]
frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n and p.dtype == torch.uint8}
lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
optimizer = torch.optim.AdamW(trainable, lr=1e-2)
losses = []
for _ in range(2):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
named = dict(model.named_parameters())
result["qlora"] = {
    "losses": losses,
    "adapted": sorted({n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in named if ".lora_A." in n}),
    "trainable_all_lora": all("lora_" in n for n, p in named.items() if p.requires_grad),
    "lora_changed": all(not torch.equal(v, named[n]) for n, v in lora_before.items()) and bool(lora_before),
    "quantized_frozen": all(torch.equal(v, named[n]) for n, v in frozen_before.items()) and bool(frozen_before),
}
json.dump(result, open(out, "w"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("hide_gptforge", [False, True], ids=["gptforge", "remote-code"])
def test_bitsandbytes_torchao_and_qlora_on_cpu(tmp_path, hide_gptforge):
    folder = tmp_path / "lm"
    save_consumer_model(folder, hidden_size=64, intermediate_size=128)
    result = run_python(QUANT_SCRIPT, str(folder), str(NEW_TOKENS), tmp_path=tmp_path, hide_gptforge=hide_gptforge)

    expected_linears = {
        "bnb-4bit": ["Linear4bit/Params4bit"],
        "bnb-8bit": ["Linear8bitLt/Int8Params"],
        "torchao-int8": ["Linear/Int8Tensor"],
    }
    for name, quantized in expected_linears.items():
        run = result[name]
        assert run["module"].startswith("transformers_modules." if hide_gptforge else "gptforge.modeling")
        # every decoder projection (q, k, v, o, gate, up, down in 2 layers) is quantized; the LM head is kept
        assert run["linear_types"] == quantized and run["num_linears"] == 14, (name, run)
        assert run["lm_head"] == "Linear/Parameter", (name, run)
        assert run["relative_error"] <= RELATIVE_BOUND[name], (name, run["relative_error"])
        assert len(run["generated"]) == 7 + NEW_TOKENS and run["first_token_is_argmax"]

    qlora = result["qlora"]
    assert qlora["adapted"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert qlora["trainable_all_lora"] and qlora["lora_changed"] and qlora["quantized_frozen"]
    assert all(loss == loss and loss > 0 for loss in qlora["losses"]) and qlora["losses"][1] < qlora["losses"][0]
