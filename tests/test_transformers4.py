"""The native export (`gptforge export SRC OUT --to transformers`) read by Transformers 4.x, which many tools still pin
(llama.cpp's GGUF converter, several vLLM releases).

Transformers 5 saves tokenizers as `TokenizersBackend`, a class 4.x does not have; the export writes the concrete
`PreTrainedTokenizerFast` instead (5.x reads it as its `TokenizersBackend` alias). The slow test builds a virtual
environment with the newest Transformers 4.x from the package registry (the CPU torch wheel, as `make install` does),
cached under ~/.cache/gptforge-tests between runs, loads the exported folder there with `AutoModelForCausalLM` and
`AutoTokenizer`, and compares token ids, logits and greedy tokens with Transformers 5 in this process.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _consumers import consumer_tokenizer, offline_env, save_consumer_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gptforge.scripts import cli

TEXTS = ["the quick brown fox jumps over the lazy dog", "paris is the capital of france."]
NEW_TOKENS = 6
V4_REQUIREMENTS = ["torch==2.13.0", "transformers>=4.57,<5"]  # the newest 4.x; torch as the project's own venv
V4_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gptforge-tests" / "transformers4-venv"
CONCRETE_TOKENIZERS = {"PreTrainedTokenizerFast", "GPT2TokenizerFast", "LlamaTokenizerFast"}


def export(tmp_path: Path, preset: str) -> tuple[Path, torch.nn.Module]:
    save_consumer_model(tmp_path / f"{preset}-gptforge", preset=preset)
    out = tmp_path / f"{preset}-native"
    assert cli.main(["export", str(tmp_path / f"{preset}-gptforge"), str(out), "--to", "transformers"]) == 0
    return out, AutoModelForCausalLM.from_pretrained(out).eval()


@pytest.mark.parametrize("preset", ["tiny", "gpt2-124m"])
def test_export_writes_a_concrete_tokenizer_class(tmp_path, preset):
    folder, _ = export(tmp_path, preset)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] in CONCRETE_TOKENIZERS
    assert "auto_map" not in tokenizer_config
    # without it, 4.x's PreTrainedTokenizerFast adds token_type_ids, which `generate` of Llama and GPT-2 rejects there
    assert tokenizer_config["model_input_names"] == ["input_ids", "attention_mask"]
    assert AutoTokenizer.from_pretrained(folder)(TEXTS)["input_ids"] == consumer_tokenizer()(TEXTS)["input_ids"]


def transformers4_python() -> Path:
    """The interpreter of the cached Transformers 4.x environment, built on first use (a stamp marks it complete)."""
    python, stamp = V4_VENV / "bin" / "python", V4_VENV / ".complete"
    if stamp.is_file() and stamp.read_text() == json.dumps(V4_REQUIREMENTS):
        return python
    shutil.rmtree(V4_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(V4_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *V4_REQUIREMENTS], check=True, timeout=1200)
    stamp.write_text(json.dumps(V4_REQUIREMENTS))
    return python


V4_SCRIPT = r"""
import json, sys
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(1)
folders, texts, new_tokens, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
result, tensors = {"version": transformers.__version__}, {}
for name, folder in folders.items():
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    inputs = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        tensors[name + ".logits"] = model(**inputs).logits
    tensors[name + ".input_ids"] = inputs["input_ids"]
    prompt = tokenizer(texts[:1], return_tensors="pt")
    tensors[name + ".generated"] = model.generate(**prompt, max_new_tokens=new_tokens, do_sample=False,
                                                  pad_token_id=tokenizer.pad_token_id)
    result[name] = {"model": type(model).__name__, "tokenizer": type(tokenizer).__name__,
                    "decoded": tokenizer.decode(tensors[name + ".generated"][0])}
save_file({k: v.contiguous() for k, v in tensors.items()}, out + ".safetensors")
json.dump(result, open(out, "w"))
"""


@pytest.mark.slow
def test_the_export_loads_in_transformers_4_with_the_same_tokens_and_logits(tmp_path):
    exported = {preset: export(tmp_path, preset) for preset in ("tiny", "gpt2-124m")}
    python = transformers4_python()
    out = tmp_path / "v4.json"
    args = [json.dumps({p: str(folder) for p, (folder, _) in exported.items()}), json.dumps(TEXTS), str(NEW_TOKENS)]
    done = subprocess.run(
        [str(python), "-I", "-c", V4_SCRIPT, *args, str(out)],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    result, tensors = json.loads(out.read_text()), load_file(f"{out}.safetensors")
    assert result["version"].startswith("4.")
    expected_class = {"tiny": "LlamaForCausalLM", "gpt2-124m": "GPT2LMHeadModel"}
    for preset, (folder, native) in exported.items():
        assert result[preset]["model"] == expected_class[preset]
        assert result[preset]["tokenizer"] == "PreTrainedTokenizerFast"
        tokenizer = AutoTokenizer.from_pretrained(folder)
        inputs = tokenizer(TEXTS, return_tensors="pt", padding=True)
        assert torch.equal(tensors[f"{preset}.input_ids"], inputs["input_ids"])
        real = inputs["attention_mask"].bool()
        with torch.no_grad():
            logits = native(**inputs).logits
        torch.testing.assert_close(tensors[f"{preset}.logits"][real], logits[real], rtol=0, atol=1e-5)
        prompt = tokenizer(TEXTS[:1], return_tensors="pt")
        generated = native.generate(
            **prompt, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        assert torch.equal(tensors[f"{preset}.generated"], generated)
        assert result[preset]["decoded"] == tokenizer.decode(generated[0])
