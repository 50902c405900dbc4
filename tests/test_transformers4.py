"""The native export (`gptforge export SRC OUT --to transformers`) read by Transformers 4.x, which many tools still pin
(llama.cpp's GGUF converter, several vLLM releases).

Transformers 5 saves tokenizers as `TokenizersBackend`, a class 4.x does not have; the export writes the concrete
`PreTrainedTokenizerFast` instead (5.x reads it as its `TokenizersBackend` alias). The slow test builds a virtual
environment with the newest Transformers 4.x from the package registry, cached under ~/.cache/gptforge-tests between
runs, loads the exported folder there with `AutoModelForCausalLM` and `AutoTokenizer`, and compares token ids, logits
and greedy tokens with Transformers 5 in this process. Torch comes as `make install` gets it: pip's local wheel, else
`TORCH_INDEX` (both `TORCH_VERSION` and `TORCH_INDEX` are read from the environment, else from the Makefile). Where
that environment cannot be built (no registry, no cached copy), the test skips, naming the step and pip's error.
"""

import json
import os
import re
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
TRANSFORMERS4 = "transformers>=4.57,<5"  # the newest 4.x
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


def makefile_setting(name: str) -> str:
    """`name` from the environment, else its `NAME ?= value` default in the Makefile (as `make` resolves it)."""
    if os.environ.get(name):
        return os.environ[name]
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    match = re.search(rf"^{name} \?= *(\S+)$", makefile, re.MULTILINE)
    assert match, f"the Makefile defines no {name}"
    return match.group(1)


class EnvironmentNotBuilt(Exception):
    """A step of building the Transformers 4.x environment failed; the message names it and pip's last word."""


def run_step(step: str, command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired as error:
        raise EnvironmentNotBuilt(f"{step}: timed out after {error.timeout:.0f} s") from None
    if done.returncode != 0:
        # pip's last line, unless it is only the pointer to its resolver docs that follows a conflict
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        if len(lines) > 1 and "for help visit" in lines[-1]:
            lines.pop()
        raise EnvironmentNotBuilt(f"{step}: {lines[-1] if lines else f'exit status {done.returncode}'}")


def build_transformers4(venv: Path) -> Path:
    """The interpreter of the Transformers 4.x environment at `venv`, built on first use (a stamp marks it complete);
    raises `EnvironmentNotBuilt` where a step fails."""
    torch_version, torch_index = makefile_setting("TORCH_VERSION"), makefile_setting("TORCH_INDEX")
    python, stamp = venv / "bin" / "python", venv / ".complete"
    requirements = json.dumps([f"torch=={torch_version}", torch_index, TRANSFORMERS4])
    if stamp.is_file() and stamp.read_text() == requirements:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    run_step("creating the virtual environment", [sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "-q"]
    torch = f"torch=={torch_version}"
    # as the Makefile: a local wheel (without its dependencies, which the last step resolves), else PyTorch's index
    try:
        run_step(f"installing {torch} from a local wheel", [*pip, "--no-index", "--no-deps", torch])
    except EnvironmentNotBuilt:
        run_step(f"installing {torch} from {torch_index}", [*pip, torch, "--index-url", torch_index])
    run_step(f"installing {TRANSFORMERS4}", [*pip, torch, TRANSFORMERS4])
    stamp.write_text(requirements)
    return python


def transformers4_python(venv: Path = V4_VENV) -> Path:
    """`build_transformers4`, or a skip that says which step failed and how."""
    try:
        return build_transformers4(venv)
    except EnvironmentNotBuilt as error:
        pytest.skip(f"no Transformers 4.x environment: {error}")


def test_an_environment_that_cannot_be_built_skips_naming_the_step_and_pip_s_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_VERSION", "2.13.0")
    monkeypatch.setenv("TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
    commands = []

    def offline_pip(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        commands.append(command)
        if command[1:3] == ["-m", "venv"]:
            return subprocess.CompletedProcess(command, 0, "", "")
        requirement = command[-1] if command[-2] != "--index-url" else command[-3]
        error = f"ERROR: No matching distribution found for {requirement}\n"
        help_line = "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/...\n"
        return subprocess.CompletedProcess(command, 1, "", "WARNING: Retrying\n" + error + help_line)

    monkeypatch.setattr(subprocess, "run", offline_pip)
    with pytest.raises(pytest.skip.Exception) as skipped:
        transformers4_python(tmp_path / "venv")
    assert str(skipped.value) == (
        "no Transformers 4.x environment: installing torch==2.13.0 from https://download.pytorch.org/whl/cpu: "
        "ERROR: No matching distribution found for torch==2.13.0"
    )
    pip = [str(tmp_path / "venv" / "bin" / "python"), "-m", "pip", "install", "-q"]
    assert commands == [
        [sys.executable, "-m", "venv", str(tmp_path / "venv")],
        [*pip, "--no-index", "--no-deps", "torch==2.13.0"],
        [*pip, "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"],
    ]
    assert not (tmp_path / "venv" / ".complete").exists()


def test_torch_version_and_index_come_from_the_environment_else_the_makefile(monkeypatch):
    monkeypatch.delenv("TORCH_VERSION", raising=False)
    monkeypatch.delenv("TORCH_INDEX", raising=False)
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert f"TORCH_VERSION ?= {makefile_setting('TORCH_VERSION')}\n" in makefile
    assert f"TORCH_INDEX ?= {makefile_setting('TORCH_INDEX')}\n" in makefile
    assert makefile_setting("TORCH_INDEX").startswith("https://")
    monkeypatch.setenv("TORCH_INDEX", "https://download.pytorch.org/whl/cu128")
    assert makefile_setting("TORCH_INDEX") == "https://download.pytorch.org/whl/cu128"


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
