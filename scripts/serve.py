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

import argparse
import os
import sys

HELP = "serve a model folder over an OpenAI-compatible API (Transformers' own server, continuous batching)"


def main(
    folder: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    continuous_batching: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
    max_model_len: int | None = None,
    cb_block_size: int | None = None,
    cb_num_blocks: int | None = None,
    cb_max_batch_tokens: int | None = None,
    default_seed: int | None = None,
    log_level: str = "info",
) -> None:
    """Serve the gptforge causal LM in `folder` until the server is stopped (Ctrl+C, SIGTERM)."""
    from gptforge.serving import serve  # imports the server's packages only when serving

    serve(
        folder,
        host=host,
        port=port,
        continuous_batching=continuous_batching,
        device=device,
        dtype=dtype,
        attn_implementation=attn_implementation,
        max_model_len=max_model_len,
        cb_block_size=cb_block_size,
        cb_num_blocks=cb_num_blocks,
        cb_max_batch_tokens=cb_max_batch_tokens,
        default_seed=default_seed,
        log_level=log_level,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="gptforge model folder (a causal LM with its tokenizer)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--continuous-batching", action="store_true", help="batch concurrent requests (paged-attention scheduler)"
    )
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--dtype", default="auto", help="'auto' (as saved), 'float32', 'bfloat16', ...")
    parser.add_argument("--attn-implementation", default=None, help="'sdpa', 'eager', 'flash_attention_2', ...")
    parser.add_argument(
        "--max-model-len", type=int, default=None, help="longest request, prompt and answer, in tokens"
    )
    parser.add_argument("--cb-block-size", type=int, default=None, help="continuous batching: tokens per cache block")
    parser.add_argument("--cb-num-blocks", type=int, default=None, help="continuous batching: cache blocks")
    parser.add_argument(
        "--cb-max-batch-tokens", type=int, default=None, help="continuous batching: tokens per forward pass"
    )
    parser.add_argument("--default-seed", type=int, default=None, help="torch seed, for reproducible sampling")
    parser.add_argument("--log-level", default="info", help="the server's log level ('info', 'warning', ...)")


def run(args: argparse.Namespace) -> int:
    try:
        main(
            args.folder,
            host=args.host,
            port=args.port,
            continuous_batching=args.continuous_batching,
            device=args.device,
            dtype=args.dtype,
            attn_implementation=args.attn_implementation,
            max_model_len=args.max_model_len,
            cb_block_size=args.cb_block_size,
            cb_num_blocks=args.cb_num_blocks,
            cb_max_batch_tokens=args.cb_max_batch_tokens,
            default_seed=args.default_seed,
            log_level=args.log_level,
        )
    except (ValueError, ModuleNotFoundError) as error:
        print(f"gptforge serve: error: {error}", file=sys.stderr)
        return 2
    return 0
