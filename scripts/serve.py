"""Serve a gptforge folder over an OpenAI-compatible HTTP API, with Transformers' own server (`transformers serve`).

`transformers serve` alone cannot load a gptforge model; this runs the same server with gptforge registered (see
`gptforge.serving`). Endpoints: `/v1/completions`, `/v1/chat/completions` (needs a chat template in the tokenizer),
`/v1/responses`, `/v1/models`, `/health`; streaming with `"stream": true`. Requests name the model as FOLDER was
written on the command line, or leave `model` out. Needs `pip install 'gptforge[serving]'`.

Usage:

    gptforge serve runs/demo/pretrain/final --port 8000
    gptforge serve runs/demo/pretrain/final --continuous-batching --cb-num-blocks 64 --cb-block-size 32
    curl 127.0.0.1:8000/v1/completions -H 'content-type: application/json' \\
        -d '{"prompt": "def fibonacci(n):", "max_tokens": 32, "temperature": 0}'

On CPU, give `--continuous-batching` a small paged cache (`--cb-num-blocks`, `--cb-block-size`,
`--cb-max-batch-tokens`): sized by default from the memory it finds, it takes far longer to set up.
"""

import os
from dataclasses import KW_ONLY, dataclass, fields

from ..training.options import option, typed_main

HELP = "serve a model folder over an OpenAI-compatible API (Transformers' own server, continuous batching)"


@dataclass
class ServeOptions:
    """Every flag of `gptforge serve`, and the keywords of `main`."""

    folder: str | os.PathLike = option(
        help="gptforge model folder (a causal LM with its tokenizer)", positional=True, metavar="FOLDER"
    )
    _: KW_ONLY
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(8000, "port to listen on")
    continuous_batching: bool = option(False, "batch concurrent requests (paged-attention scheduler)")
    device: str = option("auto", "'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = option("auto", "'auto' (as saved), 'float32', 'bfloat16', ...")
    attn_implementation: str | None = option(None, "'sdpa', 'eager', 'flash_attention_2', ...")
    max_model_len: int | None = option(None, "longest request, prompt and answer, in tokens")
    cb_block_size: int | None = option(None, "continuous batching: tokens per cache block")
    cb_num_blocks: int | None = option(None, "continuous batching: cache blocks")
    cb_max_batch_tokens: int | None = option(None, "continuous batching: tokens per forward pass")
    default_seed: int | None = option(None, "torch seed, for reproducible sampling")
    log_level: str = option("info", "the server's log level ('info', 'warning', ...)")


@typed_main(ServeOptions)
def main(options: ServeOptions) -> None:
    """Serve the gptforge causal LM in `folder` until the server is stopped (Ctrl+C, SIGTERM)."""
    from ..serving import serve  # imports the server's packages only when serving
    from ..training.errors import UsageError

    settings = {f.name: getattr(options, f.name) for f in fields(options) if f.name not in ("_", "folder")}
    try:
        serve(options.folder, **settings)
    except (ValueError, ModuleNotFoundError) as exc:  # a folder it cannot serve, or the `serving` extra missing
        raise UsageError(str(exc)) from exc
