"""Compiled decoding on CPU through the standard `generate` API.

Transformers 5.24 compiles the decode step of `generate(..., cache_implementation="static")` only on CUDA, XPU and
TPU. Elsewhere the switch is `CompileConfig._compile_all_devices`, a private flag; this helper sets it in one place,
so user code stays on public calls and a future rename is fixed here.
"""

from typing import Any

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
