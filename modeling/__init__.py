"""gptforge.modeling: the model (`modeling_gptforge.py`, with `loss_gptforge.py` and `checks_gptforge.py`) and
conversion to/from native Transformers models."""

from .modeling_gptforge import (
    GPTForgeForCausalLM,
    GPTForgeForQuestionAnswering,
    GPTForgeForSequenceClassification,
    GPTForgeForTokenClassification,
    GPTForgeModel,
    GPTForgePreTrainedModel,
)

__all__ = [
    "GPTForgePreTrainedModel",
    "GPTForgeModel",
    "GPTForgeForCausalLM",
    "GPTForgeForSequenceClassification",
    "GPTForgeForTokenClassification",
    "GPTForgeForQuestionAnswering",
]
