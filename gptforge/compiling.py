"""The two measured `torch.compile` paths, one call each.

- `cpu_compile_config()`: compiled decoding on CPU through the standard `generate` API. Transformers 5.24 compiles the
  decode step of `generate(..., cache_implementation="static")` only on CUDA, XPU and TPU. Elsewhere the switch is
  `CompileConfig._compile_all_devices`, a private flag; this helper sets it in one place, so user code stays on
  public calls and a future rename is fixed here.
- `compile_blocks(model)`: compiled training, one decoder block at a time (`make bench`: 1.18-1.34x Llama's eager
  training steps on the 2-core CPU), for hand-written loops that want the eager chunked loss and short compiles.

`gptforge pretrain --compile` compiles the whole model instead, through the Trainer (`torch_compile=True`): on an
H200 at gpt2-124m, 16 x 1024 tokens, a Trainer step took 55.5 ms that way against 96.8 ms with compiled blocks.
"""

from typing import Any

from torch import nn
from transformers import CompileConfig


def cpu_compile_config(**overrides: Any) -> CompileConfig:
    """A `CompileConfig` for `generate(..., cache_implementation="static", compile_config=...)` on CPU.

    `mode=None` with Inductor's C++ wrapper: the default "reduce-overhead" mode asks for CUDA graphs, which CPUs do
    not have. The first call compiles (seconds); each new batch size or maximum length compiles again.
    """
    settings = {"fullgraph": True, "dynamic": False, "mode": None, "options": {"cpp_wrapper": True}, **overrides}
    config = CompileConfig(**settings)
    config._compile_all_devices = True
    return config


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> nn.Module:
    """Compile each decoder block in place (`layer.compile(**compile_kwargs)`) and return the model.

    Blocks rather than `torch.compile(model)`: the state-dict names stay as they are (no `_orig_mod.` prefix), so
    `save_pretrained`, Trainer checkpoints and resuming behave as with an eager model; the chunked LM-head loss and the
    input checks around the blocks stay eager (a compiled whole model takes the plain, full-logits head); and one
    compiled graph serves every block of the same shape, so compiling takes seconds. Works on any Transformers decoder
    whose base model keeps its blocks in `.layers` (gptforge, Llama, ...). The first steps compile; a new batch shape
    compiles once more (Trainer's last, shorter batch), after which the graphs take dynamic shapes.
    """
    layers = getattr(getattr(model, "base_model", model), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"compile_blocks needs a model whose base model keeps its decoder blocks in `.layers`; "
            f"{type(model).__name__} has none"
        )
    for layer in layers:
        layer.compile(**compile_kwargs)
    return model
