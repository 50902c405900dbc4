"""Helpers for the tests that run the tools a trained model meets next (lm-eval, TRL, quantizers, ONNX, vLLM's contract,
older Transformers): a saved folder to hand them, and an interpreter in which gptforge cannot be imported, so the tool
finds the model only through the folder's `auto_map` and `trust_remote_code=True`, as it would on a user's machine.

Import as `from _consumers import ...` (tests/ is on sys.path).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from gptforge import GPTForgeConfig, GPTForgeForCausalLM, GPTForgeTokenizer, train_tokenizer

# a corpus with enough repeats for a byte-level BPE to learn whole words; the fixtures' task text is drawn from it
CORPUS_TEXT = (
    "the quick brown fox jumps over the lazy dog. a cat sat on the mat. the sky is blue and the grass is green. "
    "question: what colour is the sky? answer: blue. question: what colour is the grass? answer: green. "
    "paris is the capital of france. rome is the capital of italy. two plus two is four. one plus one is two."
)
SIZES = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128
)
NO_DROPOUT = dict(attention_dropout=0.0, hidden_dropout=0.0, embedding_dropout=0.0)


def consumer_tokenizer() -> GPTForgeTokenizer:
    return train_tokenizer([CORPUS_TEXT] * 20, vocab_size=320, model_max_length=SIZES["max_position_embeddings"])


def consumer_config(preset: str = "tiny", **overrides) -> GPTForgeConfig:
    """A small causal LM config (Llama-style by default) whose special ids match `consumer_tokenizer`."""
    extra = dict(num_key_value_heads=2) if preset == "tiny" else NO_DROPOUT
    ids = dict(vocab_size=320, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    return GPTForgeConfig.from_preset(preset, **{**SIZES, **extra, **ids, **overrides})


def save_consumer_model(folder: Path, preset: str = "tiny", seed: int = 0, **overrides) -> GPTForgeForCausalLM:
    """A random causal LM and its tokenizer saved to `folder` as `gptforge pretrain` saves them; returns the model."""
    torch.manual_seed(seed)
    model = GPTForgeForCausalLM(consumer_config(preset, **overrides)).eval()
    model.save_pretrained(folder)
    consumer_tokenizer().save_pretrained(folder)
    return model


def fit(model: GPTForgeForCausalLM, rows: list[list[int]], epochs: int) -> GPTForgeForCausalLM:
    """`model` trained in place, one AdamW step (lr 1e-2) per row per epoch, until it continues the rows; in eval mode.
    A random model's next-token logits are nearly tied, so the greedy tokens a tool reports would hang on rounding."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        for row in rows:
            ids = torch.tensor([row])
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval()


# Prepended to every script run by `run_python(..., hide_gptforge=True)`: removes the finders that locate gptforge (the editable
# install's), and proves that `import gptforge` fails, before the tool under test is imported.
HIDE_GPTFORGE = r"""
import importlib.util, sys
from importlib.machinery import PathFinder

for finder in list(sys.meta_path):
    if finder is not PathFinder and getattr(finder, "find_spec", None) and finder.find_spec("gptforge", None):
        sys.meta_path.remove(finder)
assert importlib.util.find_spec("gptforge") is None, "gptforge is still importable"
try:
    import gptforge
    raise SystemExit("gptforge imported")
except ModuleNotFoundError:
    pass
"""


def offline_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a tool run: offline, its own Hugging Face caches (remote code is re-imported fresh)."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }


def run_python(script: str, *args: str, tmp_path: Path, hide_gptforge: bool, timeout: int = 600) -> dict:
    """Run `script` in a fresh `python -I` (no cwd, PYTHONPATH or user site on sys.path) with cwd `tmp_path`, with or
    without gptforge importable; `args` are its `sys.argv[1:]`. The script writes its results as JSON to
    `sys.argv[-1]` (a file this function adds); returns them. A failing script fails the test with its stderr."""
    out = tmp_path / f"result-{'remote' if hide_gptforge else 'local'}.json"
    # importing gptforge registers its classes, which then win over the folder's code (what a user with it installed
    # gets); hidden, only the folder's code can load the model
    preamble = HIDE_GPTFORGE if hide_gptforge else "import gptforge\n"
    code = preamble + "\nimport torch\ntorch.set_num_threads(1)\n" + script
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, *args, str(out)],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(out.read_text())
