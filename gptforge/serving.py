"""Serve a gptforge folder with Transformers' own OpenAI-compatible server (`transformers serve`).

`transformers serve FOLDER` cannot load a gptforge model, even with `--trust-remote-code`: its model loader picks the
class with `getattr(transformers, config.architectures[0])`, which only finds classes that ship with Transformers
(`AttributeError: module transformers has no attribute GPTForgeForCausalLM`). Everything else in the server already
works with a registered model: the config and tokenizer load through the Auto classes (importing gptforge registers
them), and the modality check answers "LLM" for any model whose processor is a plain tokenizer.

`serve(...)` runs that same server (`transformers.cli.serve.Serve`: FastAPI + uvicorn, `/v1/completions`,
`/v1/chat/completions`, `/v1/responses`, streaming, `--continuous-batching`) with two changes:

- `GPTForgeServe.run`, a public method of `Serve`, swaps in the loader below before the server starts;
- `GPTForgeModelLoader._load_model` is the one shim: it overrides a private method of Transformers' loader to load a
  gptforge folder through `AutoModelForCausalLM` (which gptforge registers) instead of by class name, with the same
  loading arguments; any other model goes to Transformers' own code. Written against transformers 5.25, whose server
  runs each model in a process of its own (5.24's server is laid out differently, hence the extra's floor); if a later
  release resolves classes through the Auto mapping, the override can go.

The model runs in a process of its own that the server spawns. The loader is pickled into it, so unpickling it
imports this module, which imports gptforge and registers its classes there too.

This module needs the `serving` extra (`pip install 'gptforge[serving]'`, i.e. `transformers[serving]`).
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import transformers

import gptforge  # noqa: F401  (registers the gptforge classes with the Auto mappings, in the model's process too)

from .configuration import GPTForgeConfig
from .modeling import GPTForgeForCausalLM

try:
    from transformers.cli.serve import Serve
    from transformers.cli.serving.model_manager import ModelLoader
    from transformers.cli.serving.utils import parse_model_id
    from transformers.utils.import_utils import is_serve_available
except ImportError as error:  # transformers moved its server: say which version this was written against
    raise ImportError(
        f"gptforge serve needs the server of transformers 5.25 (transformers.cli.serve.Serve.run, "
        f"transformers.cli.serving.model_manager.ModelLoader); transformers {transformers.__version__} lacks them: "
        "pip install 'gptforge[serving]'"
    ) from error


class GPTForgeModelLoader(ModelLoader):
    """Transformers' serving `ModelLoader`, able to load a gptforge folder."""

    @classmethod
    def from_loader(cls, loader: ModelLoader) -> "GPTForgeModelLoader":
        """The same loader (device, dtype, attention, quantization, remote-code setting), as this class."""
        new = cls.__new__(cls)
        new.__dict__.update(vars(loader))
        return new

    # ---- SHIM: the one override of a private Transformers method (see the module docstring) -------------------------
    def _load_model(
        self, model_id: str, tqdm_class: type | None = None, progress_callback: Callable | None = None
    ) -> transformers.PreTrainedModel:
        repo, revision, gguf_file = parse_model_id(model_id)
        config = transformers.AutoConfig.from_pretrained(
            repo, revision=revision, gguf_file=gguf_file, trust_remote_code=self.trust_remote_code
        )
        if not isinstance(config, GPTForgeConfig):
            return super()._load_model(model_id, tqdm_class=tqdm_class, progress_callback=progress_callback)
        if progress_callback is not None:
            progress_callback({"status": "loading", "model": model_id, "stage": "config"})
        # the arguments `ModelLoader._load_model` passes to `from_pretrained`
        kwargs: dict[str, Any] = {
            "revision": revision,
            "attn_implementation": self.attn_implementation,
            "dtype": self.dtype,
            "device_map": self.device,
            "trust_remote_code": self.trust_remote_code,
            "tqdm_class": tqdm_class,
        }
        quantization_config = self.get_quantization_config()
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        return transformers.AutoModelForCausalLM.from_pretrained(repo, **kwargs)

    # ---- end of SHIM -------------------------------------------------------------------------------------------------


class GPTForgeServe(Serve):
    """`transformers serve`, with the loader that can load gptforge folders."""

    def run(self, *args: Any, **kwargs: Any) -> None:
        self.loader: Any = GPTForgeModelLoader.from_loader(self.loader)
        super().run(*args, **kwargs)


def check_servable(folder: str | os.PathLike[str]) -> Path:
    """`folder` as a path, if it holds a gptforge causal LM; a `ValueError` saying what it holds otherwise."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a model folder (no config.json)")
    config = GPTForgeConfig.from_pretrained(folder)
    name = (config.architectures or [GPTForgeForCausalLM.__name__])[0]
    if name != GPTForgeForCausalLM.__name__:
        raise ValueError(
            f"{folder} holds a {name}; the server generates text, which needs {GPTForgeForCausalLM.__name__}"
        )
    return folder


def serve(
    folder: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    continuous_batching: bool = False,
    **options: Any,
) -> None:
    """Serve the gptforge causal LM in `folder` with Transformers' OpenAI-compatible server, until stopped.

    Requests name the model as `folder` was given here (or leave `model` out). `options` are `transformers serve`'s
    own (`Serve.__init__`): `device`, `dtype`, `attn_implementation`, `max_model_len`, `cb_block_size`,
    `cb_num_blocks`, `cb_max_batch_tokens`, `default_seed`, `log_level`, `enable_cors`, ...
    """
    if not is_serve_available():
        raise ModuleNotFoundError("gptforge serve needs the serving extra: pip install 'gptforge[serving]'")
    folder = check_servable(folder)
    GPTForgeServe(force_model=str(folder), host=host, port=port, continuous_batching=continuous_batching, **options)


__all__ = ["GPTForgeModelLoader", "GPTForgeServe", "check_servable", "serve"]
