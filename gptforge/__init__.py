"""gptforge: one configurable GPT that plugs into Hugging Face Transformers as a native model.

`import gptforge` registers the config, every model head and the tokenizer with the Auto classes, here and nowhere
else, so `AutoModelForCausalLM.from_pretrained(folder)` and `pipeline(...)` find them.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from .compiling import compile_blocks, cpu_compile_config
from .configuration import PRESETS, GPTForgeConfig
from .modeling import (
    GPTForgeForCausalLM,
    GPTForgeForSequenceClassification,
    GPTForgeForTokenClassification,
    GPTForgeModel,
    GPTForgePreTrainedModel,
)
from .modeling.conversion import from_transformers, to_transformers
from .tokenization import GPTForgeTokenizer, train_tokenizer

__version__ = "0.1.0"

AutoConfig.register(GPTForgeConfig.model_type, GPTForgeConfig)
AutoModel.register(GPTForgeConfig, GPTForgeModel)
AutoModelForCausalLM.register(GPTForgeConfig, GPTForgeForCausalLM)
AutoModelForSequenceClassification.register(GPTForgeConfig, GPTForgeForSequenceClassification)
AutoModelForTokenClassification.register(GPTForgeConfig, GPTForgeForTokenClassification)
AutoTokenizer.register(GPTForgeConfig, tokenizer_class=GPTForgeTokenizer)


def _register_with_peft() -> None:
    """PEFT picks default target modules by model_type. gptforge's parameter names are Llama's, so it gets Llama's
    defaults (LoRA: q_proj, v_proj) and `LoraConfig(task_type="CAUSAL_LM")` works without listing modules."""
    try:
        from peft.utils import constants
    except ImportError:  # PEFT is optional at run time
        return
    for name in dir(constants):
        mapping = getattr(constants, name)
        if name.startswith("TRANSFORMERS_MODELS_TO_") and isinstance(mapping, dict) and "llama" in mapping:
            mapping.setdefault(GPTForgeConfig.model_type, mapping["llama"])


_register_with_peft()

__all__ = [
    "PRESETS",
    "GPTForgeConfig",
    "GPTForgeForCausalLM",
    "GPTForgeForSequenceClassification",
    "GPTForgeForTokenClassification",
    "GPTForgeModel",
    "GPTForgePreTrainedModel",
    "GPTForgeTokenizer",
    "from_transformers",
    "to_transformers",
    "train_tokenizer",
    "cpu_compile_config",
    "compile_blocks",
    "__version__",
]
