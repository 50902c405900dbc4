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
    "__version__",
]
