"""gptforge: one configurable GPT that plugs into Hugging Face Transformers as a native model.

`import gptforge` registers the config, every model head and the tokenizer with the Auto classes, here and nowhere
else, so `AutoModelForCausalLM.from_pretrained(folder)` and `pipeline(...)` find them.

Importing is cheap: the public names (`from gptforge import GPTForgeConfig`) load their modules on first use (PEP 562
`__getattr__`), and the registration, which needs torch and Transformers' modeling stack, happens when Transformers
is first imported (at once, if it already is). The Auto classes cannot be reached without importing Transformers,
so they always find gptforge, while `gptforge --help` and other code that never touches Transformers pay nothing
for it. PEFT's defaults for the model type are added the same way, when `peft` is imported.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

MODEL_TYPE = "gptforge"  # GPTForgeConfig.model_type, known here without importing the config

# public name -> the module that defines it
_LAZY_NAMES: dict[str, str] = {
    "PRESETS": ".configuration",
    "GPTForgeConfig": ".configuration",
    "GPTForgeForCausalLM": ".modeling",
    "GPTForgeForQuestionAnswering": ".modeling",
    "GPTForgeForSequenceClassification": ".modeling",
    "GPTForgeForTokenClassification": ".modeling",
    "GPTForgeModel": ".modeling",
    "GPTForgePreTrainedModel": ".modeling",
    "GPTForgeTokenizer": ".tokenization",
    "train_tokenizer": ".tokenization",
    "from_seed_encoder": ".modeling.conversion",
    "from_transformers": ".modeling.conversion",
    "to_transformers": ".modeling.conversion",
    "cpu_compile_config": ".compiling",
    "compile_blocks": ".compiling",
}

if TYPE_CHECKING:
    from .compiling import compile_blocks, cpu_compile_config
    from .configuration import PRESETS, GPTForgeConfig
    from .modeling import (
        GPTForgeForCausalLM,
        GPTForgeForQuestionAnswering,
        GPTForgeForSequenceClassification,
        GPTForgeForTokenClassification,
        GPTForgeModel,
        GPTForgePreTrainedModel,
    )
    from .modeling.conversion import from_seed_encoder, from_transformers, to_transformers
    from .tokenization import GPTForgeTokenizer, train_tokenizer


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:  # `gptforge.modeling` before anything imported it
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


# --------------------------------------------------------------------------------------------------------------------
# Registration with the Auto classes and PEFT
# --------------------------------------------------------------------------------------------------------------------

_registered = False
_executing = 0  # gptforge modules being executed right now (registration imports them: it waits for them to finish)


def register() -> None:
    """Register the config, model heads and tokenizer with the Auto classes (idempotent).

    Runs by itself when Transformers is imported; call it only to register at a moment of your choosing.
    """
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from .configuration import GPTForgeConfig
    from .modeling import (
        GPTForgeForCausalLM,
        GPTForgeForQuestionAnswering,
        GPTForgeForSequenceClassification,
        GPTForgeForTokenClassification,
        GPTForgeModel,
    )
    from .tokenization import GPTForgeTokenizer

    AutoConfig.register(GPTForgeConfig.model_type, GPTForgeConfig, exist_ok=True)
    AutoModel.register(GPTForgeConfig, GPTForgeModel, exist_ok=True)
    AutoModelForCausalLM.register(GPTForgeConfig, GPTForgeForCausalLM, exist_ok=True)
    AutoModelForSequenceClassification.register(GPTForgeConfig, GPTForgeForSequenceClassification, exist_ok=True)
    AutoModelForTokenClassification.register(GPTForgeConfig, GPTForgeForTokenClassification, exist_ok=True)
    AutoModelForQuestionAnswering.register(GPTForgeConfig, GPTForgeForQuestionAnswering, exist_ok=True)
    AutoTokenizer.register(GPTForgeConfig, tokenizer_class=GPTForgeTokenizer, exist_ok=True)


def _register_with_peft(constants: ModuleType) -> None:
    """PEFT picks default target modules by model_type. gptforge's parameter names are Llama's, so it gets Llama's
    defaults (LoRA: q_proj, v_proj) and `LoraConfig(task_type="CAUSAL_LM")` works without listing modules."""
    for name in dir(constants):
        mapping = getattr(constants, name)
        if name.startswith("TRANSFORMERS_MODELS_TO_") and isinstance(mapping, dict) and "llama" in mapping:
            mapping.setdefault(MODEL_TYPE, mapping["llama"])


class _Loader(importlib.abc.Loader):
    """Runs a module as its own loader would, then `after(fullname)`."""

    def __init__(self, loader: importlib.abc.Loader, after: Any) -> None:
        self._loader, self._after = loader, after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._after(module.__name__, self._loader.exec_module, module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, get_source, ...
        return getattr(self._loader, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders return for Transformers, PEFT's constants and
    gptforge's own modules, so registration runs once the modules it needs are complete."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname not in ("transformers", "peft.utils.constants") and not fullname.startswith(f"{__name__}."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader, _run_then_register)
        return spec


def _run_then_register(fullname: str, exec_module: Any, module: ModuleType) -> None:
    global _executing
    _executing += fullname.startswith(f"{__name__}.")
    try:
        exec_module(module)
    finally:
        _executing -= fullname.startswith(f"{__name__}.")
    if fullname == "peft.utils.constants":
        _register_with_peft(module)
    # Not while a gptforge module is half executed: registration imports them, and would find one half done.
    elif "transformers" in sys.modules and not _executing:
        register()


sys.meta_path.insert(0, _AfterImport())
if "peft.utils.constants" in sys.modules:
    _register_with_peft(sys.modules["peft.utils.constants"])
if "transformers" in sys.modules:
    register()

__all__ = [
    "PRESETS",
    "GPTForgeConfig",
    "GPTForgeForCausalLM",
    "GPTForgeForQuestionAnswering",
    "GPTForgeForSequenceClassification",
    "GPTForgeForTokenClassification",
    "GPTForgeModel",
    "GPTForgePreTrainedModel",
    "GPTForgeTokenizer",
    "from_seed_encoder",
    "from_transformers",
    "to_transformers",
    "train_tokenizer",
    "cpu_compile_config",
    "compile_blocks",
    "register",
    "__version__",
]
