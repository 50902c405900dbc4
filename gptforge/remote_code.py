"""Self-contained model folders: the flat remote-code files and `auto_map` every save writes.

Transformers loads custom code (`trust_remote_code=True`) from flat `.py` files next to `config.json`, and it only
follows single-dot relative imports between them (`from .configuration_gptforge import GPTForgeConfig`). The package
keeps its code in `gptforge.configuration`, `gptforge.modeling` and `gptforge.tokenization`, so every save generates
the flat files from the package source: `flatten_module` rewrites the relative imports, drops the blocks marked
package-only (the save hooks that call this module), and `audit_remote_code` checks what the result may import and
call. There is never a second, hand-maintained copy of the code. The rules an edit of those files must follow (what
they may import, the package-only markers) are in CONTRIBUTING.md ("Remote code").

Hooks: `GPTForgeConfig.save_pretrained` and `GPTForgeTokenizer.save_pretrained` call `save_pretrained_with_code`.
A model's `save_pretrained` saves its config, so every model folder gets the code too. In the flat copies the hooks
are gone; a model loaded from them gets Transformers' own `_auto_class`, and re-saving copies the flat files again.
"""

import ast
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import transformers
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
            # an absolute `from X import` (level 0, handled here) always names its module
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
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
    if source_file is None or not module.__package__:
        raise RemoteCodeError(
            f"{FLAT_MODULES[stem]} has no Python source inside a package to generate remote code from"
        )
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


__all__ = [
    "ALLOWED_PACKAGES",
    "FLAT_MODULES",
    "PACKAGE_ONLY_BEGIN",
    "PACKAGE_ONLY_END",
    "RemoteCodeError",
    "audit_remote_code",
    "flatten_module",
    "model_auto_map",
    "remote_code_files",
    "save_pretrained_with_code",
    "save_then_push",
    "tokenizer_auto_map",
    "write_remote_code",
]
