"""gptforge.configuration: the model config and its named presets."""

from .configuration_gptforge import PRESETS, GPTForgeConfig

__all__ = ["GPTForgeConfig", "PRESETS"]
