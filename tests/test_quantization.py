"""Quantized loading on CPU: bitsandbytes 4-bit (NF4) and 8-bit (LLM.int8) through `BitsAndBytesConfig`, torchao
int8 weight-only through `TorchAoConfig`, and QLoRA (PEFT LoRA on the 4-bit model), with gptforge installed and
without it (remote code only).

bitsandbytes runs here on its CPU backend (no CUDA). Its 4-bit CPU path packs weights in blocks of 64 input features,
so the model here has hidden size 64 (a smaller one fails inside bitsandbytes, not in gptforge).

A random model's next-token logits are nearly tied (top two within 0.01), so any rounding may change its greedy
tokens; the model here is first trained to continue one sequence, which makes every greedy choice lead by several
logits. Each quantized model must then give the float model's greedy tokens, and its logit error must be a small
fraction of the error of the float model with every quantized layer zeroed (what a quantization that lost those
weights would give).
"""

import pytest
from _consumers import fit, run_python, save_consumer_model

PROMPT = [5, 6, 7, 8, 9, 10, 11]
NEW_TOKENS = 4
# the largest |quantized - float| logit over that of the model with its decoder projections zeroed, measured:
# 4-bit 0.05, 8-bit 0.007, int8 weight-only 0.003
ERROR_FRACTION = {"bnb-4bit": 0.2, "bnb-8bit": 0.03, "torchao-int8": 0.03}
# each greedy choice of the float model leads the runner-up by at least this many logits
MIN_MARGIN = 2.0

QUANT_SCRIPT = r"""
import json, sys
import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TorchAoConfig
from torchao.quantization import Int8WeightOnlyConfig

folder, prompt, new_tokens, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ids = torch.tensor([prompt])

def is_quantized_layer(name):
    # the decoder's projections (q, k, v, o, gate, up, down): what the quantizers replace; the LM head is kept
    return name.startswith("model.layers.") and name.rsplit(".", 1)[-1].endswith("_proj")

reference = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    greedy = reference.generate(ids, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                                return_dict_in_generate=True)
    top2 = torch.cat(greedy.logits).topk(2, dim=-1).values
    ref_logits = reference(greedy.sequences).logits
    skipped = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    for name, module in skipped.named_modules():
        if is_quantized_layer(name):
            module.weight.zero_()
    skipped_error = (skipped(greedy.sequences).logits - ref_logits).abs().max().item()
result = {
    "float": {"generated": greedy.sequences[0].tolist(), "margins": (top2[:, 0] - top2[:, 1]).tolist()},
    "skipped_error": skipped_error,
}
configs = {
    "bnb-4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
    "bnb-8bit": BitsAndBytesConfig(load_in_8bit=True),
    "torchao-int8": TorchAoConfig(Int8WeightOnlyConfig()),
}
for name, quantization_config in configs.items():
    model = AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=True, quantization_config=quantization_config, device_map="cpu"
    ).eval()
    linears = {n: m for n, m in model.named_modules() if is_quantized_layer(n) and hasattr(m, "weight")}
    with torch.no_grad():
        logits = model(greedy.sequences).logits
    result[name] = {
        "module": type(model).__module__,
        "linear_types": sorted({f"{type(m).__name__}/{type(m.weight).__name__}" for m in linears.values()}),
        "num_linears": len(linears),
        "lm_head": f"{type(model.lm_head).__name__}/{type(model.lm_head.weight).__name__}",
        "error": (logits - ref_logits).abs().max().item(),
        "generated": model.generate(ids, max_new_tokens=new_tokens, do_sample=False)[0].tolist(),
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


def save_peaked_model(folder) -> None:
    """The consumer model at hidden size 64, trained for 20 steps to continue `PROMPT` with 40, 41, ... (~50 ms)."""
    model = save_consumer_model(folder, hidden_size=64, intermediate_size=128)
    fit(model, [PROMPT + list(range(40, 40 + NEW_TOKENS + 1))], epochs=20).save_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("hide_gptforge", [False, True], ids=["gptforge", "remote-code"])
def test_bitsandbytes_torchao_and_qlora_on_cpu(tmp_path, hide_gptforge):
    folder = tmp_path / "lm"
    save_peaked_model(folder)
    result = run_python(
        QUANT_SCRIPT, str(folder), str(PROMPT), str(NEW_TOKENS), tmp_path=tmp_path, hide_gptforge=hide_gptforge
    )

    greedy = result["float"]["generated"]
    assert greedy == PROMPT + [40, 41, 42, 43], greedy  # what the model was trained to say
    assert min(result["float"]["margins"]) >= MIN_MARGIN, result["float"]
    # zeroing the quantized layers moves the logits by more than any greedy margin: the baseline the errors scale to
    assert result["skipped_error"] > MIN_MARGIN, result["skipped_error"]
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
        assert run["error"] <= ERROR_FRACTION[name] * result["skipped_error"], (name, run, result["skipped_error"])
        assert run["generated"] == greedy, (name, run)

    qlora = result["qlora"]
    assert qlora["adapted"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert qlora["trainable_all_lora"] and qlora["lora_changed"] and qlora["quantized_frozen"]
    assert all(loss == loss and loss > 0 for loss in qlora["losses"]) and qlora["losses"][1] < qlora["losses"][0]
