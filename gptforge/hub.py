"""Self-contained model folders for the Hub: flat remote code, `auto_map`, and the model card.

Transformers loads custom code (`trust_remote_code=True`) from flat `.py` files next to `config.json`, and it only
follows single-dot relative imports between them (`from .configuration_gptforge import GPTForgeConfig`). The package
keeps its code in `gptforge.configuration`, `gptforge.modeling` and `gptforge.tokenization`, so every save generates
the flat files from the package source: `flatten_module` rewrites the relative imports, drops the blocks marked
package-only (the save hooks that call this module), and `audit_remote_code` checks what the result may import and
call. There is never a second, hand-maintained copy of the code.

Hooks: `GPTForgeConfig.save_pretrained` and `GPTForgeTokenizer.save_pretrained` call `save_pretrained_with_code`.
A model's `save_pretrained` saves its config, so every model folder gets the code too. In the flat copies the hooks
are gone; a model loaded from them gets Transformers' own `_auto_class`, and re-saving copies the flat files again.

The model card (`model_card`) is written by `gptforge push` when a folder has no README.md.
"""

import ast
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import transformers
import yaml
from transformers import PreTrainedConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from .storage import atomic_folder

# flat file stem -> the package module it is generated from
FLAT_MODULES: dict[str, str] = {
    "configuration_gptforge": "gptforge.configuration.configuration_gptforge",
    "modeling_gptforge": "gptforge.modeling.modeling_gptforge",
    "loss_gptforge": "gptforge.modeling.loss_gptforge",
    "checks_gptforge": "gptforge.modeling.checks_gptforge",
    "tokenization_gptforge": "gptforge.tokenization.tokenization_gptforge",
}

# Lines between these markers (inclusive) exist only in the package: the save hooks that import this module.
PACKAGE_ONLY_BEGIN = "# >>> gptforge package only"
PACKAGE_ONLY_END = "# <<< gptforge package only"

# Third-party packages a flat file may import: torch, transformers, and packages transformers itself requires and
# imports the same way (its own `configuration_llama.py` does `from huggingface_hub.dataclasses import strict`).
ALLOWED_PACKAGES = frozenset({"torch", "transformers", "tokenizers", "huggingface_hub", "safetensors"})
# Standard-library modules that reach the network, other processes, pickles or arbitrary files.
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio", "ctypes", "ftplib", "glob", "http", "importlib", "io", "marshal", "multiprocessing", "pathlib",
        "pickle", "pty", "runpy", "shelve", "shutil", "signal", "smtplib", "socket", "ssl", "subprocess", "tempfile",
        "telnetlib", "urllib", "webbrowser", "xmlrpc", "zipfile", "tarfile",
    }
)  # fmt: skip
FORBIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__", "open", "input", "breakpoint"})
# The only `os` names allowed: read-only path checks, as Transformers' own tokenizer loading does.
ALLOWED_OS_NAMES = frozenset({"path", "fspath", "PathLike", "listdir", "sep"})
ALLOWED_OS_PATH_NAMES = frozenset({"isfile", "isdir", "exists", "join", "abspath", "basename", "dirname", "splitext"})
FORBIDDEN_TORCH_NAMES = frozenset({"load", "save", "hub"})  # torch.load/save: pickle; torch.hub: downloads

# Transformers' own relative-import regexes (`dynamic_module_utils.get_relative_imports`): they run on the raw text.
_TRANSFORMERS_RELATIVE_IMPORT = (
    re.compile(r"^\s*import\s+\.(\S+)\s*$", re.M),
    re.compile(r"^\s*from\s+\.(\S+)\s+import", re.M),
)
_RELATIVE_FROM = re.compile(r"^(?P<indent>\s*)from\s+(?P<target>\.+[\w.]*)\s+import\b", re.M)

# model class name suffix -> the Auto class that loads it
_AUTO_CLASS_BY_SUFFIX = {
    "Model": "AutoModel",
    "ForCausalLM": "AutoModelForCausalLM",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
}
# architecture suffix -> (pipeline tag, Auto class used in the card's snippet)
_PIPELINE_BY_SUFFIX = {
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForQuestionAnswering": ("question-answering", "AutoModelForQuestionAnswering"),
    "Model": ("feature-extraction", "AutoModel"),
}

TRAINING_SUMMARY_FILE = "training_summary.json"
METRICS_FILE = "metrics.jsonl"
# keys of training_summary.json that go to the card's front matter rather than its training table
_CARD_METADATA_KEYS = ("base_model", "datasets", "license")
# summary entries that are local paths: never published
_LOCAL_PATH_KEYS = ("output_dir", "final_dir")


class RemoteCodeError(ValueError):
    """The package source cannot be turned into remote code that loads, and is safe to load, without gptforge."""


# --------------------------------------------------------------------------------------------------------------------
# flattening
# --------------------------------------------------------------------------------------------------------------------


def _strip_package_only(text: str, origin: str) -> str:
    kept, inside = [], False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        marker = line.strip()
        if marker.startswith(PACKAGE_ONLY_BEGIN):
            if inside:
                raise RemoteCodeError(f"{origin}:{number}: nested {PACKAGE_ONLY_BEGIN!r}")
            inside = True
        elif marker.startswith(PACKAGE_ONLY_END):
            if not inside:
                raise RemoteCodeError(f"{origin}:{number}: {PACKAGE_ONLY_END!r} without a matching begin marker")
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise RemoteCodeError(f"{origin}: {PACKAGE_ONLY_BEGIN!r} is never closed")
    return "".join(kept)


def _rewrite_relative_imports(text: str, package: str, origin: str) -> str:
    flat_by_module = {module: stem for stem, module in FLAT_MODULES.items()}

    def rewrite(match: re.Match) -> str:
        target = importlib.util.resolve_name(match["target"], package)
        if target not in flat_by_module:
            raise RemoteCodeError(
                f"{origin}: `from {match['target']} import` resolves to {target!r}, which is not part of the "
                f"remote code ({sorted(flat_by_module)}); move the import into a package-only block or make that "
                "module a flat module"
            )
        return f"{match['indent']}from .{flat_by_module[target]} import"

    return _RELATIVE_FROM.sub(rewrite, text)


def audit_remote_code(text: str, filename: str) -> None:
    """Raise `RemoteCodeError` unless `text` is flat remote code that imports only torch, transformers (and the
    packages transformers requires), the standard library and its flat siblings, and calls no network, subprocess,
    `eval`/`exec`, pickle or file-writing API.

    Function-level imports count too: Transformers' `check_imports` scans them as well.
    """
    siblings = set(FLAT_MODULES)
    for pattern in _TRANSFORMERS_RELATIVE_IMPORT:
        for name in pattern.findall(text):
            if name not in siblings:
                raise RemoteCodeError(f"{filename}: Transformers would look for a sibling file {name!r}.py")
    problems = []
    for node in ast.walk(ast.parse(text, filename=filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level != 1 or node.module not in siblings:
                problems.append(f"{where}: relative import of {'.' * node.level}{node.module or ''}")
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            if isinstance(node, ast.Import):
                # `import os as x` would hide `x.system(...)` from the attribute checks below
                renamed = [a.name for a in node.names if a.asname and a.name.split(".")[0] in ("os", "torch")]
                problems += [f"{where}: imports {name!r} under another name" for name in renamed]
            for module in modules:
                top = module.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    problems.append(f"{where}: imports {module!r}")
                elif top not in ALLOWED_PACKAGES and top not in sys.stdlib_module_names:
                    problems.append(f"{where}: imports {module!r} (allowed: {sorted(ALLOWED_PACKAGES)} and stdlib)")
            if isinstance(node, ast.ImportFrom) and node.module in ("os", "os.path", "torch"):
                allowed = {"os": ALLOWED_OS_NAMES, "os.path": ALLOWED_OS_PATH_NAMES}.get(node.module)
                for alias in node.names:
                    if (allowed is not None and alias.name not in allowed) or alias.name in FORBIDDEN_TORCH_NAMES:
                        problems.append(f"{where}: imports {node.module}.{alias.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            problems.append(f"{where}: calls {node.func.id}()")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, name = node.value.id, node.attr
            if (owner == "os" and name not in ALLOWED_OS_NAMES) or (
                owner == "torch" and name in FORBIDDEN_TORCH_NAMES
            ):
                problems.append(f"{where}: uses {owner}.{name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and (node.value.value.id, node.value.attr) == ("os", "path")
            and node.attr not in ALLOWED_OS_PATH_NAMES
        ):
            problems.append(f"{where}: uses os.path.{node.attr}")
    if problems:
        raise RemoteCodeError("remote code failed the audit:\n  " + "\n  ".join(problems))


def flatten_module(stem: str) -> str:
    """The flat remote-code text of `FLAT_MODULES[stem]`, generated from the package source and audited."""
    from . import __version__

    module = importlib.import_module(FLAT_MODULES[stem])
    source_file = inspect.getsourcefile(module)
    origin = f"{FLAT_MODULES[stem]} ({source_file})"
    text = Path(source_file).read_text(encoding="utf-8")
    text = _strip_package_only(text, origin)
    text = _rewrite_relative_imports(text, module.__package__, origin)
    header = (
        f"# Generated by gptforge {__version__} from {FLAT_MODULES[stem]} for Transformers remote code\n"
        "# (trust_remote_code=True). Do not edit: edit the gptforge package and save the model again.\n"
    )
    text = header + text
    audit_remote_code(text, f"{stem}.py")
    return text


def remote_code_files() -> dict[str, str]:
    """File name -> text of every flat remote-code file."""
    return {f"{stem}.py": flatten_module(stem) for stem in FLAT_MODULES}


def write_remote_code(folder: str | os.PathLike, files: Mapping[str, str] | None = None) -> list[Path]:
    """Write the flat remote-code files (`files`, default `remote_code_files()`) into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (remote_code_files() if files is None else files).items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def model_auto_map() -> dict[str, str]:
    """`auto_map` for config.json: AutoConfig and every exported model class (AutoModel, each head)."""
    from .configuration import configuration_gptforge
    from .modeling import modeling_gptforge

    auto_map = {"AutoConfig": f"configuration_gptforge.{configuration_gptforge.GPTForgeConfig.__name__}"}
    for name in modeling_gptforge.__all__:
        suffix = name.removeprefix("GPTForge")
        auto_class = _AUTO_CLASS_BY_SUFFIX.get(suffix)
        if auto_class is not None and hasattr(transformers, auto_class):
            auto_map[auto_class] = f"modeling_gptforge.{name}"
    return auto_map


def tokenizer_auto_map() -> dict[str, list[str | None]]:
    """`auto_map` for tokenizer_config.json: [slow class, fast class]; gptforge has only the fast one."""
    from .tokenization.tokenization_gptforge import GPTForgeTokenizer

    return {"AutoTokenizer": [None, f"tokenization_gptforge.{GPTForgeTokenizer.__name__}"]}


def save_pretrained_with_code(
    obj: PreTrainedConfig | PreTrainedTokenizerBase,
    parent_save: Callable[..., Any],
    save_directory: str | os.PathLike,
    push_to_hub: bool = False,
    **kwargs: Any,
) -> Any:
    """`save_pretrained` of a gptforge config or tokenizer: sets the `auto_map`, runs the parent's save, writes the
    flat remote-code files.

    With `push_to_hub=True` the folder is saved here, then uploaded through `obj.push_to_hub` (which saves again into
    a temporary folder, through this same hook): the parent's own push takes its snapshot of the folder before the
    code files would be written, and would leave them out.
    """
    if push_to_hub:
        return save_then_push(obj, partial(save_pretrained_with_code, obj, parent_save), save_directory, kwargs)
    files = remote_code_files()  # flattened and audited first: a failure leaves no half-written folder
    if isinstance(obj, PreTrainedConfig):
        obj.auto_map = {**(getattr(obj, "auto_map", None) or {}), **model_auto_map()}
    else:
        obj._auto_map = tokenizer_auto_map()
    with atomic_folder(save_directory) as staging:
        result = parent_save(staging, **kwargs)
        write_remote_code(staging, files)
    return result


def save_then_push(obj: Any, save: Callable[..., Any], save_directory: str | os.PathLike, kwargs: dict) -> Any:
    """Save into `save_directory` with `save`, then upload through `obj.push_to_hub` (which saves again into a
    temporary folder through the same hooks): the Transformers push takes its snapshot before our hooks have written
    the code files, and would name the repository after a staging folder."""
    repo_id = kwargs.pop("repo_id", Path(save_directory).name)
    hub_kwargs = {
        key: kwargs.pop(key)
        for key in ("commit_message", "commit_description", "private", "token", "revision", "create_pr")
        if key in kwargs
    }
    result = save(save_directory, **kwargs)
    obj.push_to_hub(repo_id, **hub_kwargs)
    return result


# --------------------------------------------------------------------------------------------------------------------
# model card
# --------------------------------------------------------------------------------------------------------------------


def summarize_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Headline figures from `metrics.jsonl` records (the `Trainer` logs `pretrain`/`finetune` append there)."""
    records = [record for record in records if isinstance(record, Mapping)]

    def last(key: str) -> Any:
        return next((record[key] for record in reversed(records) if record.get(key) is not None), None)

    figures = {
        "steps": max((record["step"] for record in records if "step" in record), default=None),
        "tokens_seen": max((record["tokens"] for record in records if "tokens" in record), default=None),
        "final_train_loss": last("loss"),
        "eval_loss": last("eval_loss"),
        "eval_perplexity": last("eval_perplexity"),
        "train_runtime_s": last("train_runtime"),
    }
    return {key: value for key, value in figures.items() if value is not None}


def read_training_figures(folder: str | os.PathLike) -> dict[str, Any]:
    """The training figures recorded with a model, or `{}`.

    Contract with `pretrain`/`finetune`: `training_summary.json` in the model folder, a JSON object whose scalar
    entries are shown in the card in file order (what `pretrain.main` returns: `global_step`, `tokens_seen`,
    `train_loss`, `eval_loss`, `eval_perplexity`, `train_runtime_s`, ...; local paths `output_dir`/`final_dir` are
    left out), plus optional `base_model` (str, for fine-tunes), `datasets` (Hub dataset ids) and `license`, which
    go to the front matter. Without it, `summarize_metrics` of `metrics.jsonl` in the folder or its parent (the run
    folder of `OUT/final`) is used.
    """
    folder = Path(folder)
    summary = folder / TRAINING_SUMMARY_FILE
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{summary} must hold a JSON object, got {type(data).__name__}")
        return {key: value for key, value in data.items() if key not in _LOCAL_PATH_KEYS and value is not None}
    for metrics in (folder / METRICS_FILE, folder.parent / METRICS_FILE):
        if metrics.is_file():
            lines = metrics.read_text(encoding="utf-8").splitlines()
            return summarize_metrics(json.loads(line) for line in lines if line.strip())
    return {}


def _format_figure(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def count_parameters(folder: str | os.PathLike) -> int | None:
    """Number of stored parameters (tied tensors once), read from the safetensors headers without loading them."""
    from safetensors import safe_open

    folder = Path(folder)
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                numel = 1
                for dim in f.get_slice(key).get_shape():
                    numel *= dim
                total += numel
    return total if files else None


def _native_equivalent(config: Any) -> str:
    from .modeling.conversion import gptforge_config_to_native

    try:
        native = gptforge_config_to_native(config)
    except ValueError:
        return "none (gptforge-specific features)"
    return "GPT2LMHeadModel" if native.model_type == "gpt2" else "LlamaForCausalLM"


def _architecture_rows(config: Any, architecture: str, parameters: int | None) -> list[tuple[str, str]]:
    heads = f"{config.num_attention_heads} query / {config.num_key_value_heads} key-value, head dim {config.head_dim}"
    position = config.position_embedding_type
    if position == "rope":
        position = (
            f"rotary (theta {config.rope_parameters.get('rope_theta')}, {config.rope_parameters.get('rope_type')})"
        )
    attention = "causal" if config.is_causal else "bidirectional"
    if config.attention_scale is not None:
        attention += f", scores scaled by {config.attention_scale}"
    norm = f"{config.norm_type}, {config.norm_position}-norm, eps {config.norm_eps}"
    if config.shared_post_norm:
        norm += ", one norm shared by both residual joins"
    return [
        ("class", f"`{architecture}`"),
        ("parameters", f"{parameters:,}" if parameters is not None else "unknown"),
        ("layers", str(config.num_hidden_layers)),
        ("hidden size", str(config.hidden_size)),
        ("attention heads", heads),
        ("attention", attention),
        ("MLP", f"{config.mlp_type}, {config.hidden_act}, intermediate {config.intermediate_size}"),
        ("positions", position),
        ("norm", norm),
        ("biases", f"attention {config.attention_bias}, MLP {config.mlp_bias}"),
        ("vocabulary", str(config.vocab_size)),
        ("context length", str(config.max_position_embeddings)),
        ("tied embeddings", str(config.tie_word_embeddings)),
        ("dtype", str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")),
        ("exact native Transformers model", _native_equivalent(config)),
    ]


def _table(rows: Iterable[tuple[str, str]], header: tuple[str, str]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {cell(key)} | {cell(value)} |" for key, value in rows]
    return "\n".join(lines)


TRUST_REMOTE_CODE_NOTE = f"""\
`trust_remote_code=True` lets Transformers import and run the Python files of this repository
({", ".join(f"`{name}.py`" for name in FLAT_MODULES)}) on your machine, with your permissions. gptforge
generates them from its own package source at save time. They import only torch,
transformers, packages transformers itself requires (tokenizers, huggingface_hub, safetensors), the Python standard
library and each other, and they contain no network, subprocess, `eval`/`exec` or file-writing code. The weights
are safetensors only, never pickle. Read the files before you trust them, and pin `revision=` to a commit you have
read: a later push to this repository can change the code that runs. With gptforge installed and imported
(`import gptforge`), the package's own classes load the model and no code from the repository runs."""


def model_card(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    figures: Mapping[str, Any] | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
) -> str:
    """A README.md for a saved gptforge folder: YAML front matter, architecture table, training figures, usage.

    `figures` default to `read_training_figures(folder)`; `license`, `datasets` and `base_model` default to the
    entries of the same name there, the license to "apache-2.0".
    """
    from .configuration import GPTForgeConfig

    folder = Path(folder)
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != GPTForgeConfig.model_type:
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not gptforge: write its README.md model card yourself"
        )
    config = GPTForgeConfig.from_pretrained(folder)
    architecture = (config.architectures or ["GPTForgeForCausalLM"])[0]
    suffix = architecture.removeprefix("GPTForge")
    pipeline_tag, auto_class = _PIPELINE_BY_SUFFIX.get(suffix, _PIPELINE_BY_SUFFIX["Model"])
    figures = dict(read_training_figures(folder) if figures is None else figures)
    metadata_defaults = {key: figures.pop(key, None) for key in _CARD_METADATA_KEYS}
    repo = repo_id or folder.resolve().name

    front = {
        "library_name": "transformers",
        "pipeline_tag": pipeline_tag,
        "tags": ["gptforge"],
        "license": license or metadata_defaults["license"] or "apache-2.0",
    }
    datasets = datasets or metadata_defaults["datasets"]
    if datasets:
        front["datasets"] = [datasets] if isinstance(datasets, str) else list(datasets)
    base_model = base_model or metadata_defaults["base_model"]
    if base_model:
        front["base_model"] = base_model

    scalar_figures = [(key, _format_figure(value)) for key, value in figures.items() if not isinstance(value, dict)]
    training = (
        _table(scalar_figures, ("figure", "value"))
        if scalar_figures
        else f"No training figures were recorded (`{TRAINING_SUMMARY_FILE}` or `{METRICS_FILE}`)."
    )
    if pipeline_tag == "text-generation":
        use = 'print(pipe("Once upon a time", max_new_tokens=40)[0]["generated_text"])'
    else:
        use = 'print(pipe("An example input"))'

    sections = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---",
        f"# {repo}",
        f"A `{architecture}` model built and trained with gptforge"
        + (f", fine-tuned from `{base_model}`." if base_model else "."),
        "## Architecture\n\n"
        + _table(_architecture_rows(config, architecture, count_parameters(folder)), ("property", "value")),
        "## Training\n\n" + training,
        "## Usage\n\nWith the gptforge package installed, its own classes load the model and no code from this "
        "repository runs.\n\n"
        "```python\n"
        "import gptforge  # registers the gptforge classes with the Auto classes\n"
        f"from transformers import {auto_class}, AutoTokenizer, pipeline\n\n"
        f'model = {auto_class}.from_pretrained("{repo}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        f'pipe = pipeline("{pipeline_tag}", model="{repo}")\n'
        f"{use}\n"
        "```\n\n"
        "With only torch and transformers: the code files of this repository are imported (see below).\n\n"
        "```python\n"
        f"from transformers import {auto_class}, AutoTokenizer, pipeline\n\n"
        'revision = "<commit sha you have read>"\n'
        f'model = {auto_class}.from_pretrained("{repo}", trust_remote_code=True, revision=revision)\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True, revision=revision)\n'
        f'pipe = pipeline("{pipeline_tag}", model="{repo}", trust_remote_code=True, revision=revision)\n'
        f"{use}\n"
        "```",
        "## What `trust_remote_code=True` means\n\n" + TRUST_REMOTE_CODE_NOTE,
    ]
    return "\n\n".join(sections) + "\n"


__all__ = [
    "FLAT_MODULES",
    "RemoteCodeError",
    "audit_remote_code",
    "count_parameters",
    "flatten_module",
    "model_auto_map",
    "model_card",
    "read_training_figures",
    "remote_code_files",
    "save_pretrained_with_code",
    "summarize_metrics",
    "tokenizer_auto_map",
    "write_remote_code",
]
