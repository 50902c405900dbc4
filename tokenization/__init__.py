"""gptforge.tokenization: the byte-level BPE tokenizer and its trainer.

Registration with `AutoTokenizer` happens in `gptforge/__init__.py`, next to the model's, and nowhere else.
"""

from .tokenization_gptforge import GPTForgeTokenizer
from .training import train_tokenizer

__all__ = ["GPTForgeTokenizer", "train_tokenizer"]
