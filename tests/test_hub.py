"""Self-contained folders (flat remote code), loading without gptforge, native export, and the push path.

"Without gptforge" is an interpreter started with `python -I` (no cwd, PYTHONPATH or user site on sys.path), with cwd
outside the repository, whose import system is stripped of the finders that locate gptforge (the editable install's
`_EditableFinder`), so `import gptforge` raises `ModuleNotFoundError`: torch, transformers and their own
dependencies stay. A new virtual environment would need torch reinstalled, which is too slow for the fast tier.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from _consumers import HIDE_GPTFORGE
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    Qwen3ForCausalLM,
    pipeline,
)
from transformers.dynamic_module_utils import get_imports, get_relative_imports

from gptforge import (
    GPTForgeConfig,
    GPTForgeForCausalLM,
    GPTForgeForSequenceClassification,
    GPTForgeTokenizer,
    remote_code,
    train_tokenizer,
)
from gptforge.model_card import card_for_folder, model_card
from gptforge.scripts import cli, export, push

CODE_FILES = {
    "configuration_gptforge.py",
    "modeling_gptforge.py",
    "loss_gptforge.py",
    "checks_gptforge.py",
    "tokenization_gptforge.py",
}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}
LM_FILES = {"config.json", "generation_config.json", "model.safetensors"} | TOKENIZER_FILES | CODE_FILES
FULL_AUTO_MAP = {
    "AutoConfig": "configuration_gptforge.GPTForgeConfig",
    "AutoModel": "modeling_gptforge.GPTForgeModel",
    "AutoModelForCausalLM": "modeling_gptforge.GPTForgeForCausalLM",
    "AutoModelForSequenceClassification": "modeling_gptforge.GPTForgeForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_gptforge.GPTForgeForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_gptforge.GPTForgeForQuestionAnswering",
}
SIZES = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64
)
NO_DROPOUT = dict(attention_dropout=0.0, hidden_dropout=0.0, embedding_dropout=0.0)
TEXTS = ["the quick brown fox", "hello gptforge, hello world and more words"]
PROMPT = "the quick"
NEW_TOKENS = 8
# third-party packages the flat files may import: torch, transformers and what transformers itself requires
ALLOWED_PACKAGES = {"torch", "transformers", "tokenizers", "huggingface_hub", "safetensors"}


def small_config(preset: str = "tiny", **overrides) -> GPTForgeConfig:
    extra = dict(num_key_value_heads=2) if preset == "tiny" else NO_DROPOUT
    ids = dict(vocab_size=300, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    return GPTForgeConfig.from_preset(preset, **{**SIZES, **extra, **ids, **overrides})


@pytest.fixture(scope="module")
def tokenizer() -> GPTForgeTokenizer:
    corpus = [" ".join(TEXTS) + " jumps over the lazy dog, quick words and foxes"] * 20
    return train_tokenizer(corpus, vocab_size=300, model_max_length=64)


@pytest.fixture(scope="module")
def lm(tmp_path_factory, tokenizer):
    """A Llama-style causal LM saved with its tokenizer: (folder, model)."""
    torch.manual_seed(0)
    model = GPTForgeForCausalLM(small_config()).eval()
    folder = tmp_path_factory.mktemp("lm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tokenizer):
    torch.manual_seed(1)
    config = small_config(
        num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2}
    )
    model = GPTForgeForSequenceClassification(config).eval()
    folder = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def encode(tokenizer, texts=TEXTS) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


def greedy(model, tokenizer) -> torch.Tensor:
    inputs = tokenizer([PROMPT], return_tensors="pt")
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=1)


# --------------------------------------------------------------------------------------------------------------------
# the folder and its flat code
# --------------------------------------------------------------------------------------------------------------------


def test_save_pretrained_writes_a_self_contained_folder(lm, classifier):
    folder, _ = lm
    assert {p.name for p in folder.iterdir()} == LM_FILES
    assert json.loads((folder / "config.json").read_text())["auto_map"] == FULL_AUTO_MAP
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"] == {"AutoTokenizer": [None, "tokenization_gptforge.GPTForgeTokenizer"]}
    # a classifier has no generation config; everything else is the same
    assert {p.name for p in classifier[0].iterdir()} == LM_FILES - {"generation_config.json"}


def test_a_tokenizer_saved_alone_gets_the_code_too(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == TOKENIZER_FILES | CODE_FILES


def test_sharded_save_writes_an_index_and_loads_back(tmp_path, lm):
    _, model = lm
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    names = {p.name for p in tmp_path.iterdir()}
    shards = {n for n in names if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", n)}
    assert len(shards) > 1 and "model.safetensors.index.json" in names and CODE_FILES <= names
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == shards
    ids = torch.randint(2, 300, (2, 7))
    torch.testing.assert_close(
        AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, model(ids).logits, rtol=0, atol=0
    )


def test_flat_files_are_the_package_source_with_imports_flattened(lm):
    folder, _ = lm
    for stem, module_name in remote_code.FLAT_MODULES.items():
        flat = (folder / f"{stem}.py").read_text()
        source = Path(sys.modules[module_name].__file__).read_text()
        # the package-only blocks (save hooks) go; the relative imports become same-folder ones; nothing else changes
        expected = re.sub(
            r"\n[ \t]*# >>> gptforge package only.*?# <<< gptforge package only\n", "\n", source, flags=re.S
        )
        expected = expected.replace(
            "from ..configuration.configuration_gptforge import", "from .configuration_gptforge import"
        )
        body = flat.split("\n", 2)[2]  # after the two-line "generated" header
        assert body == expected, stem
        assert flat.startswith("# Generated by gptforge")
    modeling = (folder / "modeling_gptforge.py").read_text()
    assert "from .configuration_gptforge import GPTForgeConfig" in modeling


def test_flat_files_import_only_torch_transformers_and_each_other(lm):
    folder, _ = lm
    for name in CODE_FILES:
        path = folder / name
        # what Transformers itself will check and copy
        assert set(get_relative_imports(path)) <= {n.removesuffix(".py") for n in CODE_FILES}, name
        assert set(get_imports(path)) <= ALLOWED_PACKAGES | set(sys.stdlib_module_names), name
        # and an AST walk of every import, function-level ones included
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and f"{node.module}.py" in CODE_FILES, (name, node.module)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for module in modules:
                    top = module.split(".")[0]
                    assert top != "gptforge" and (top in ALLOWED_PACKAGES or top in sys.stdlib_module_names), module


def test_flat_files_have_no_network_subprocess_eval_or_file_writes(lm):
    folder, _ = lm
    forbidden_modules = {"socket", "ssl", "urllib", "http", "requests", "httpx", "subprocess", "multiprocessing",
                         "shutil", "pickle", "marshal", "ctypes", "importlib", "pathlib", "tempfile"}  # fmt: skip
    forbidden_calls = {"eval", "exec", "compile", "__import__", "open"}
    for name in CODE_FILES:
        text = (folder / name).read_text()
        remote_code.audit_remote_code(text, name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not {m.split(".")[0] for m in modules} & forbidden_modules, (name, modules)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in forbidden_calls, (name, node.func.id)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "os":  # read-only path checks only, as Transformers' own loaders do
                    assert node.attr in {"path", "fspath", "PathLike", "listdir", "sep"}, (name, node.attr)
                if node.value.id == "torch":
                    assert node.attr not in {"load", "save", "hub"}, (name, node.attr)


@pytest.mark.parametrize(
    "code, problem",
    [
        ("x = eval('1')", "calls eval()"),
        ("exec('x = 1')", "calls exec()"),
        ("import subprocess", "imports 'subprocess'"),
        ("from urllib.request import urlopen", "imports 'urllib.request'"),
        ("def f():\n    import requests", "imports 'requests'"),
        ("import gptforge", "imports 'gptforge'"),
        ("import os\nos.remove('x')", "uses os.remove"),
        ("import os\nos.path.getsize('x')", "uses os.path.getsize"),
        ("from os import system", "imports os.system"),
        ("import os as o\no.system('x')", "imports 'os' under another name"),
        ("import torch\ntorch.load('x')", "uses torch.load"),
        ("with open('x', 'w') as f:\n    pass", "calls open()"),
        ("from .conversion import x", "Transformers would look for a sibling file 'conversion'.py"),
    ],
)
def test_audit_rejects_unsafe_or_unflat_code(code, problem):
    with pytest.raises(remote_code.RemoteCodeError, match=re.escape(problem)):
        remote_code.audit_remote_code(code, "x.py")


def test_flattening_refuses_imports_it_cannot_flatten():
    source = "from ..modeling.conversion import to_transformers\n"
    with pytest.raises(remote_code.RemoteCodeError, match="gptforge.modeling.conversion.*not part of the remote code"):
        remote_code._rewrite_relative_imports(source, "gptforge.modeling", "m.py")
    with pytest.raises(remote_code.RemoteCodeError, match="never closed"):
        remote_code._strip_package_only(f"a = 1\n    {remote_code.PACKAGE_ONLY_BEGIN}\nb = 2\n", "m.py")


# --------------------------------------------------------------------------------------------------------------------
# loading: with gptforge, and in an interpreter that cannot import it
# --------------------------------------------------------------------------------------------------------------------


def test_loads_without_trust_remote_code_when_gptforge_is_installed(lm, classifier, tokenizer):
    folder, model = lm
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert type(loaded) is GPTForgeForCausalLM  # the package's class, not the folder's code
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(loaded_tokenizer) is GPTForgeTokenizer
    inputs = encode(loaded_tokenizer)
    assert inputs["input_ids"].tolist() == encode(tokenizer)["input_ids"].tolist()
    torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
    assert type(AutoModelForSequenceClassification.from_pretrained(classifier[0])) is GPTForgeForSequenceClassification


def test_pipelines_load_the_folder(lm, classifier, tokenizer):
    folder, model = lm
    generator = pipeline("text-generation", model=str(folder))
    out = generator(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False, return_tensors=True)
    assert out[0]["generated_token_ids"] == greedy(model, tokenizer)[0].tolist()

    cls_folder, cls_model = classifier
    (scores,) = pipeline("text-classification", model=str(cls_folder), top_k=None)([TEXTS[1]])
    probabilities = cls_model(**encode(tokenizer, [TEXTS[1]])).logits.softmax(-1)[0]
    expected = {cls_model.config.id2label[i]: p.item() for i, p in enumerate(probabilities)}
    assert {s["label"]: pytest.approx(s["score"], abs=1e-6) for s in scores} == expected


def test_loads_in_bfloat16_and_with_device_map_auto(lm, tokenizer):
    folder, model = lm
    inputs = encode(tokenizer)
    bf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16(**inputs).logits.float(), model(**inputs).logits, rtol=0.1, atol=0.05)
    mapped = AutoModelForCausalLM.from_pretrained(folder, device_map="auto")
    # accelerate placed it (on this machine's only device; one with a GPU gets cuda:0)
    assert mapped.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    torch.testing.assert_close(
        mapped(**{k: v.to(mapped.device) for k, v in inputs.items()}).logits.cpu(), model(**inputs).logits
    )


# gptforge must not be importable (HIDE_GPTFORGE drops the finders that locate it, then checks)
WITHOUT_GPTFORGE = (
    HIDE_GPTFORGE
    + r"""
import json

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers import pipeline

torch.set_num_threads(1)
lm_folder, cls_folder, out = sys.argv[1:4]
texts, prompt, new_tokens = json.loads(sys.argv[4])
result = {"modules": {}}

tokenizer = AutoTokenizer.from_pretrained(lm_folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(lm_folder, trust_remote_code=True).eval()
classifier = AutoModelForSequenceClassification.from_pretrained(cls_folder, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(lm_folder, trust_remote_code=True)
config = AutoConfig.from_pretrained(lm_folder, trust_remote_code=True)
for name, obj in [("tokenizer", tokenizer), ("lm", model), ("classifier", classifier), ("base", base), ("config", config)]:
    result["modules"][name] = [type(obj).__module__, type(obj).__name__]

inputs = tokenizer(texts, return_tensors="pt", padding=True)
prompt_ids = tokenizer([prompt], return_tensors="pt")
tensors = {
    "input_ids": inputs["input_ids"],
    "lm_logits": model(**inputs).logits,
    "cls_logits": classifier(**inputs).logits,
    "generated": model.generate(**prompt_ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=1),
}
generator = pipeline("text-generation", model=lm_folder, trust_remote_code=True)
result["pipeline_ids"] = generator(prompt, max_new_tokens=new_tokens, do_sample=False, return_tensors=True)[0][
    "generated_token_ids"
]
result["pipeline_labels"] = [
    s["label"] for s in pipeline("text-classification", model=cls_folder, trust_remote_code=True)(texts)
]

# re-saving the remote model copies the flat code again (Transformers' own _auto_class path), and it reloads
resaved = out + "/resaved"
model.save_pretrained(resaved)
tokenizer.save_pretrained(resaved)
reloaded = AutoModelForCausalLM.from_pretrained(resaved, trust_remote_code=True).eval()
tensors["resaved_logits"] = reloaded(**inputs).logits
result["resaved_module"] = type(reloaded).__module__

save_file({k: v.contiguous() for k, v in tensors.items()}, out + "/tensors.safetensors")
with open(out + "/result.json", "w") as f:
    json.dump(result, f)
"""
)


def test_loads_and_generates_in_an_interpreter_without_gptforge(tmp_path, lm, classifier, tokenizer):
    (lm_folder, model), (cls_folder, cls_model) = lm, classifier
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    args = [str(lm_folder), str(cls_folder), str(tmp_path), json.dumps([TEXTS, PROMPT, NEW_TOKENS])]
    done = subprocess.run(
        [sys.executable, "-I", "-c", WITHOUT_GPTFORGE, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    remote = load_file(tmp_path / "tensors.safetensors")

    # every class came from the folder's code, imported from the modules cache
    for name, (module, _) in result["modules"].items():
        assert module.startswith("transformers_modules."), (name, module)
    assert {name: cls for name, (_, cls) in result["modules"].items()} == {
        "tokenizer": "GPTForgeTokenizer",
        "lm": "GPTForgeForCausalLM",
        "classifier": "GPTForgeForSequenceClassification",
        "base": "GPTForgeModel",
        "config": "GPTForgeConfig",
    }
    assert result["resaved_module"].startswith("transformers_modules.")

    inputs = encode(tokenizer)
    assert torch.equal(remote["input_ids"], inputs["input_ids"])
    torch.testing.assert_close(remote["lm_logits"], model(**inputs).logits, rtol=0, atol=0)
    torch.testing.assert_close(remote["cls_logits"], cls_model(**inputs).logits, rtol=0, atol=0)
    torch.testing.assert_close(remote["resaved_logits"], model(**inputs).logits, rtol=0, atol=0)
    expected_tokens = greedy(model, tokenizer)
    assert torch.equal(remote["generated"], expected_tokens)
    assert result["pipeline_ids"] == expected_tokens[0].tolist()
    labels = [cls_model.config.id2label[i] for i in cls_model(**inputs).logits.argmax(-1).tolist()]
    assert result["pipeline_labels"] == labels


# --------------------------------------------------------------------------------------------------------------------
# native export
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, overrides, native_cls",
    [
        ("tiny", {}, LlamaForCausalLM),
        ("gpt2-124m", {}, GPT2LMHeadModel),
        ("tiny", {"qk_norm": True}, Qwen3ForCausalLM),
    ],
)
def test_export_writes_a_native_folder_and_is_reproducible(tmp_path, tokenizer, preset, overrides, native_cls):
    model = GPTForgeForCausalLM(small_config(preset, **overrides)).eval()
    model.save_pretrained(tmp_path / "gptforge")
    tokenizer.save_pretrained(tmp_path / "gptforge")

    assert cli.main(["export", str(tmp_path / "gptforge"), str(tmp_path / "native"), "--to", "transformers"]) == 0
    native_names = {p.name for p in (tmp_path / "native").iterdir()}
    assert native_names == {"config.json", "generation_config.json", "model.safetensors"} | TOKENIZER_FILES
    native = AutoModelForCausalLM.from_pretrained(tmp_path / "native")
    assert type(native) is native_cls and "auto_map" not in native.config.to_dict()
    native_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "native")
    assert not isinstance(native_tokenizer, GPTForgeTokenizer)
    inputs = encode(native_tokenizer)
    assert inputs["input_ids"].tolist() == encode(tokenizer)["input_ids"].tolist()
    real = inputs["attention_mask"].bool()  # padded positions differ by design (gptforge counts real tokens only)
    torch.testing.assert_close(native(**inputs).logits[real], model(**inputs).logits[real], rtol=0, atol=0)
    assert torch.equal(greedy(native, native_tokenizer), greedy(model, tokenizer))

    # re-import with `gptforge convert`, export again: the same bytes
    assert cli.main(["convert", "--source", str(tmp_path / "native"), "--out", str(tmp_path / "reimported")]) == 0
    export.main(tmp_path / "reimported", tmp_path / "native2")
    assert {p.name for p in (tmp_path / "native2").iterdir()} == native_names
    for name in sorted(native_names):
        assert (tmp_path / "native" / name).read_bytes() == (tmp_path / "native2" / name).read_bytes(), name


def test_export_names_what_does_not_map(tmp_path, capsys):
    GPTForgeForCausalLM(small_config("encoder", is_causal=True)).save_pretrained(tmp_path / "postnorm")
    with pytest.raises(ValueError, match=r"norm_position='post'.*As LlamaForCausalLM:.*position_embedding_type"):
        export.main(tmp_path / "postnorm", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    capsys.readouterr()
    assert cli.main(["export", str(tmp_path / "postnorm"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_export_refuses_a_classifier(classifier, tmp_path):
    with pytest.raises(ValueError, match="GPTForgeForSequenceClassification; only GPTForgeForCausalLM"):
        export.main(classifier[0], tmp_path / "out")


# --------------------------------------------------------------------------------------------------------------------
# push and the model card (never reaching the network)
# --------------------------------------------------------------------------------------------------------------------


def test_push_dry_run_lists_exactly_what_save_pretrained_wrote(lm, capsys):
    folder, _ = lm
    before = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert cli.main(["push", str(folder), "--repo-id", "me/tiny", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    files = push.main(folder, "me/tiny", dry_run=True)
    assert {f.path: f.size for f in files if not f.generated} == before
    assert [f.path for f in files if f.generated] == ["README.md"]
    for f in files:
        assert re.search(rf"^\s+{f.size:,} B .* {re.escape(f.path)}\b", printed, re.M), f.path
    assert {p.name: p.stat().st_size for p in folder.iterdir()} == before  # a dry run writes nothing


def test_push_lists_every_shard(tmp_path, lm):
    lm[1].save_pretrained(tmp_path, max_shard_size="20KB")
    listed = {f.path for f in push.main(tmp_path, "me/tiny", dry_run=True)}
    assert listed == {p.name for p in tmp_path.iterdir()} | {"README.md"}


class FakeHfApi:
    calls: list = []

    def __init__(self, *args, **kwargs):
        assert not args and not kwargs  # the user's usual token: no token passed around

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return type("CommitInfo", (), {"commit_url": "https://hf.co/me/tiny/commit/0"})()


def split_card(text: str) -> tuple[dict, str]:
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, "no YAML front matter"
    return yaml.safe_load(match[1]), match[2]


def test_push_uploads_through_huggingface_hub_with_a_model_card(tmp_path, lm, monkeypatch):
    folder = tmp_path / "model"
    lm[1].save_pretrained(folder)
    summary = {
        "global_step": 200,
        "tokens_seen": 409600,
        "train_loss": 3.2114,
        "eval_loss": 3.4,
        "output_dir": "/home/x",
    }
    summary |= {"datasets": ["roneneldan/TinyStories"], "base_model": "me/base", "license": "mit"}
    (folder / "training_summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)  # push imports it when it runs
    FakeHfApi.calls = []
    files = push.main(folder, "me/tiny", private=True, revision="v1", commit_message="first")

    (create, repo, create_kwargs), (branch, _, branch_kwargs), (upload, _, upload_kwargs) = FakeHfApi.calls
    assert (create, repo, create_kwargs) == (
        "create_repo",
        "me/tiny",
        dict(private=True, repo_type="model", exist_ok=True),
    )
    assert (branch, branch_kwargs) == ("create_branch", dict(branch="v1", repo_type="model", exist_ok=True))
    assert upload == "upload_folder"
    assert upload_kwargs["folder_path"] == folder and upload_kwargs["revision"] == "v1"
    assert upload_kwargs["commit_message"] == "first"
    assert sorted(upload_kwargs["allow_patterns"]) == sorted(f.path for f in files)
    assert {f.path for f in files} == {p.name for p in folder.iterdir()}  # README.md now written

    meta, body = split_card((folder / "README.md").read_text())
    assert meta == {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["gptforge"],
        "license": "mit",
        "datasets": ["roneneldan/TinyStories"],
        "base_model": "me/base",
    }
    assert "| layers | 2 |" in body and "| exact native Transformers model | LlamaForCausalLM |" in body
    assert "| tokens_seen | 409,600 |" in body and "| train_loss | 3.211 |" in body and "/home/x" not in body
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny")' in body
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny", trust_remote_code=True, revision=revision)' in body
    assert "## What `trust_remote_code=True` means" in body
    for snippet in re.findall(r"```python\n(.*?)```", body, re.S):
        ast.parse(snippet)

    # an existing README.md is left alone
    FakeHfApi.calls = []
    (folder / "README.md").write_text("mine\n")
    push.main(folder, "me/tiny")
    assert (folder / "README.md").read_text() == "mine\n"
    assert FakeHfApi.calls[0][2]["private"] is None  # no --private: the account's default visibility


def test_model_card_of_a_classifier_reads_the_run_metrics(tmp_path, classifier):
    run = tmp_path / "run"
    folder = run / "final"
    classifier[1].save_pretrained(folder)
    records = [{"step": 10, "tokens": 640, "loss": 2.5}, {"step": 10, "eval_loss": 2.25, "eval_perplexity": 9.49}]
    records += [{"step": 20, "tokens": 1280, "loss": 2.0}, {"step": 20, "train_runtime": 12.5, "train_loss": 2.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    meta, body = split_card(model_card(folder, repo_id="me/cls"))
    assert meta["pipeline_tag"] == "text-classification" and "base_model" not in meta and "datasets" not in meta
    for row in ("| steps | 20 |", "| tokens_seen | 1,280 |", "| final_train_loss | 2 |", "| eval_loss | 2.25 |"):
        assert row in body
    assert 'pipeline("text-classification", model="me/cls", trust_remote_code=True' in body


def test_every_card_writes_front_matter_that_reads_back_as_given(tmp_path, lm):
    """Values with a colon, quotes, a newline or a leading YAML indicator: each card's front matter (gptforge,
    native, PEFT adapter) loads back to exactly the values given."""
    native, adapter = tmp_path / "native", tmp_path / "adapter"
    native.mkdir(), adapter.mkdir()
    (native / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4}))
    given = dict(
        license='other: "see LICENSE"',
        datasets=["me/data: v2", "it's", "two\nlines", "- dash", "#hash", "yes"],
        base_model="me/base:\n  injected: true",
    )
    for folder, library, tags in (
        (lm[0], "transformers", ["gptforge"]),
        (native, "transformers", ["gptforge", "llama"]),
        (adapter, "peft", ["gptforge", "lora"]),
    ):
        meta, body = split_card(card_for_folder(folder, "me/m", **given))
        pipeline = {"pipeline_tag": "text-generation"} if library == "transformers" else {}
        assert meta == {"library_name": library, "tags": tags, **pipeline, **given}, folder.name
        assert body.startswith("\n# ")  # the card goes on after the front matter


def test_push_refuses_pickle_weights(tmp_path, lm):
    lm[1].save_pretrained(tmp_path)
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is a pickle file .*For weights: .*writes safetensors"):
        push.main(tmp_path, "me/tiny", dry_run=True)


@pytest.fixture
def offline_push_to_hub(monkeypatch):
    """Transformers' `push_to_hub`, with the three calls that would reach the Hub replaced; records the folder
    contents it would upload."""
    import transformers.utils.hub as transformers_hub

    uploads = []
    api = type("Api", (), {"create_repo": lambda self, repo_id, **kw: type("R", (), {"repo_id": repo_id})()})()
    card = type("Card", (), {"save": lambda self, path: Path(path).write_text("card\n")})()
    monkeypatch.setattr(transformers_hub, "hf_api", lambda: api)
    monkeypatch.setattr(transformers_hub, "create_and_tag_model_card", lambda *a, **kw: card)

    def upload(self, working_dir, repo_id, files_timestamps, **kwargs):
        uploads.append((repo_id, sorted(p.name for p in Path(working_dir).iterdir())))

    monkeypatch.setattr(transformers_hub.PushToHubMixin, "_upload_modified_files", upload)
    return uploads


def test_push_to_hub_uploads_the_code_with_model_tokenizer_and_config(tmp_path, lm, tokenizer, offline_push_to_hub):
    _, model = lm
    model.push_to_hub("me/m")
    tokenizer.push_to_hub("me/t")
    # save_pretrained(push_to_hub=True) of a config: the parent's own push would miss the code files
    model.config.save_pretrained(tmp_path / "config", push_to_hub=True, repo_id="me/c")
    assert offline_push_to_hub == [
        ("me/m", sorted(LM_FILES - TOKENIZER_FILES | {"README.md"})),
        ("me/t", sorted(TOKENIZER_FILES | CODE_FILES | {"README.md"})),
        ("me/c", sorted(CODE_FILES | {"config.json", "README.md"})),
    ]
    assert {p.name for p in (tmp_path / "config").iterdir()} == CODE_FILES | {"config.json"}
