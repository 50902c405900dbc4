"""save_pretrained / from_pretrained through the Auto classes, in a fresh interpreter, safetensors only."""

import json
import subprocess
import sys

import pytest
import torch
from _helpers import arch_config
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from gptforge import GPTForgeForCausalLM, GPTForgeForSequenceClassification, GPTForgeModel

LOAD_IN_NEW_PROCESS = """
import sys, torch, gptforge
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
torch.set_num_threads(1)  # as the test process (conftest): the same kernels, so logits compare bit for bit
folder, kind = sys.argv[1], sys.argv[2]
cls = AutoModelForCausalLM if kind == "lm" else AutoModelForSequenceClassification
model = cls.from_pretrained(folder).eval()
ids = torch.load(folder + "/ids.pt", weights_only=True)
torch.save({"logits": model(ids).logits, "tied": model.get_input_embeddings().weight is model.get_output_embeddings().weight
            if kind == "lm" else None, "cls": type(model).__name__}, folder + "/out.pt")
"""


def load_in_new_process(folder, kind: str) -> dict:
    subprocess.run([sys.executable, "-c", LOAD_IN_NEW_PROCESS, str(folder), kind], check=True, timeout=120)
    return torch.load(folder / "out.pt", weights_only=True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal_lm_round_trip_in_a_new_process(tmp_path, arch):
    model = GPTForgeForCausalLM(arch_config(arch)).eval()
    model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    ids = torch.randint(0, 128, (2, 9))
    torch.save(ids, tmp_path / "ids.pt")
    out = load_in_new_process(tmp_path, "lm")
    assert out["cls"] == "GPTForgeForCausalLM"
    assert torch.equal(out["logits"], model(ids).logits)
    assert out["tied"] == (arch == "gpt2")


def test_sequence_classification_round_trip_in_a_new_process(tmp_path):
    model = GPTForgeForSequenceClassification(arch_config("llama", num_labels=3, pad_token_id=0)).eval()
    model.config.id2label = {0: "a", 1: "b", 2: "c"}
    model.config.label2id = {"a": 0, "b": 1, "c": 2}
    model.save_pretrained(tmp_path)
    ids = torch.randint(1, 128, (2, 9))
    torch.save(ids, tmp_path / "ids.pt")
    out = load_in_new_process(tmp_path, "cls")
    assert out["cls"] == "GPTForgeForSequenceClassification"
    assert torch.equal(out["logits"], model(ids).logits)
    assert json.loads((tmp_path / "config.json").read_text())["id2label"] == {"0": "a", "1": "b", "2": "c"}


def test_causal_lm_checkpoint_loads_into_other_heads(tmp_path):
    lm = GPTForgeForCausalLM(arch_config("llama")).eval()
    lm.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, GPTForgeModel)
    assert torch.equal(base.embed_tokens.weight, lm.model.embed_tokens.weight)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert torch.equal(classifier.model.layers[0].mlp.down_proj.weight, lm.model.layers[0].mlp.down_proj.weight)


@pytest.mark.parametrize("arch", ["llama", "mqa-headdim"])
def test_rotary_buffers_are_recomputed_after_loading(tmp_path, arch):
    # Transformers 5 fills non-persistent buffers with empty memory on load; _init_weights must recompute them
    model = GPTForgeForCausalLM(arch_config(arch))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    expected = 1.0 / (10000.0 ** (torch.arange(0, model.config.head_dim, 2).float() / model.config.head_dim))
    torch.testing.assert_close(loaded.model.rotary_emb.inv_freq, expected)
    torch.testing.assert_close(loaded.model.rotary_emb.original_inv_freq, expected)


def test_from_config_through_auto_class():
    model = AutoModelForCausalLM.from_config(arch_config("llama"))
    assert isinstance(model, GPTForgeForCausalLM)


def test_bf16_load(tmp_path):
    GPTForgeForCausalLM(arch_config("gpt2")).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.lm_head.weight is model.model.embed_tokens.weight
