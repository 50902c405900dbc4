"""Generate continuations of prompts with a model folder: greedy, sampling or beam search, streamed as they come.

Prompts come from the arguments, or from stdin (one per line; write `\\n` for a newline inside a prompt) when none
are given. They run in batches (`--batch-size`, left-padded). With a batch of one, tokens are printed as they are
generated; with several prompts on a terminal, a live one-line preview per prompt is redrawn as tokens arrive and
the full texts are printed at the end. Beam search cannot stream (Transformers' limit): its results print at the end.

Each prompt is preceded by one BOS token (`<|endoftext|>`), as every document is in pretraining. A pretrained
folder's tokenizer adds it itself, so a prompt is encoded as `tokenizer(prompt)` (and with it `model.generate`,
pipelines and lm-eval) encodes it; for a folder whose tokenizer does not add it (saved by an earlier gptforge, or
another model's), generate puts it there. `--no-bos` turns it off either way.

Usage:
    gptforge generate --model runs/demo/pretrain/final "def fibonacci(n):" "import os"
    echo 'class Stack:\\n    def push(self, item):' | gptforge generate --model runs/x/final --max-new-tokens 80
    gptforge generate --model runs/x/final --sample --temperature 0.8 --top-p 0.95 --seed 1 "for i in range("
    gptforge generate --model runs/x/final --num-beams 4 "def add(a, b):"
"""

import os
import sys
from dataclasses import KW_ONLY, dataclass
from typing import Any, TextIO

from ..training.errors import UsageError
from ..training.options import option, typed_main

HELP = "generate continuations of prompts (args or stdin), streamed; greedy, sampling or beams"


def read_prompts(prompts: list[str] | None, stdin: TextIO | None = None) -> list[str]:
    """The given prompts, or stdin's non-empty lines with `\\n` and `\\t` unescaped.

    An empty prompt is a `UsageError`: there is no text to continue (and without BOS not even one token to start from).
    """
    if prompts:
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                raise UsageError(
                    f"prompt {index} is empty ({prompt!r}); generation continues a text: pass one, "
                    "e.g. gptforge generate --model MODEL 'def main('"
                )
        return list(prompts)
    stdin = stdin or sys.stdin
    lines = [line.rstrip("\n") for line in stdin if line.strip()]
    prompts = [line.replace("\\n", "\n").replace("\\t", "\t") for line in lines]
    if not prompts:
        raise UsageError("no prompts: pass them as arguments or one per line on stdin")
    return prompts


@dataclass
class GenerateOptions:
    """Every flag of `gptforge generate`, and the keywords of `main`."""

    model: str | os.PathLike = option(help="model folder (gptforge, or any causal LM Transformers loads)")
    prompts: list[str] | None = option(None, "prompts; none: read one per line from stdin", positional=True, nargs="*")
    _: KW_ONLY
    # --- decoding ---
    max_new_tokens: int = option(64, "tokens to generate per prompt")
    sample: bool = option(False, "sample instead of greedy decoding")
    temperature: float = option(1.0, "sampling temperature")
    top_k: int | None = option(None, "sample among the k most likely tokens")
    top_p: float | None = option(None, "nucleus sampling: smallest set with this mass")
    num_beams: int = option(1, "beam search width (> 1 disables streaming)")
    repetition_penalty: float | None = option(None, "> 1 discourages repeats")
    # --- batching and output ---
    batch_size: int = option(8, "prompts generated together")
    bos: bool = option(True, "do not put the BOS token before each prompt", flags=["--no-bos"])
    seed: int = option(0, "sampling seed")
    stream: bool = option(True, "print the results at the end only", flags=["--no-stream"])
    out: TextIO | None = option(None, "where the text goes (default: stdout)", cli=False)


@typed_main(GenerateOptions)
def main(options: GenerateOptions) -> list[dict[str, str]]:
    """Generate and return `[{"prompt": ..., "completion": ...}]` in prompt order (completions exclude the prompt).

    Greedy unless `sample` (then `temperature`, `top_k`, `top_p` apply); `num_beams > 1` is beam search. Sampling
    is reproducible for a given `seed` and batch composition.
    """
    out = options.out or sys.stdout
    prompts = read_prompts(options.prompts)
    if not os.path.isdir(options.model):
        raise UsageError(f"no model folder at {str(options.model)!r}: pass a folder written by save_pretrained")

    import torch
    from transformers import AutoModelForCausalLM, set_seed

    from ..training.folders import adds_bos, load_tokenizer
    from .streaming import TerminalStreamer

    tokenizer = load_tokenizer(options.model)
    tokenizer.padding_side = "left"  # decoder-only: generation continues from the last position of every row
    # BOS comes from the tokenizer when it adds it (one owner, the one every other path uses), else from here
    own_bos = adds_bos(tokenizer)
    prefix = tokenizer.bos_token if options.bos and not own_bos and tokenizer.bos_token else ""
    net = AutoModelForCausalLM.from_pretrained(options.model).eval()
    stop_ids = {i for i in [tokenizer.eos_token_id, tokenizer.pad_token_id] if i is not None}

    settings: dict[str, Any] = dict(
        max_new_tokens=options.max_new_tokens,
        do_sample=options.sample,
        num_beams=options.num_beams,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if options.sample:
        settings.update(temperature=options.temperature, top_k=options.top_k, top_p=options.top_p)
    if options.repetition_penalty is not None:
        settings["repetition_penalty"] = options.repetition_penalty
    can_stream = options.stream and options.num_beams == 1

    results: list[dict[str, str]] = []
    for start in range(0, len(prompts), options.batch_size):
        batch = prompts[start : start + options.batch_size]
        encoded = tokenizer(
            [prefix + p for p in batch], return_tensors="pt", padding=True, add_special_tokens=options.bos and own_bos
        )
        streamer = TerminalStreamer(tokenizer, stop_ids, stream=out) if can_stream else None
        if streamer is not None and len(batch) == 1:
            out.write(f"--- [{start}] ---\n{batch[0]}")
            out.flush()
        set_seed(options.seed + start)
        with torch.no_grad():
            generated = net.generate(**encoded, streamer=streamer, **settings)
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        completions = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for offset, (prompt, completion) in enumerate(zip(batch, completions, strict=True)):
            results.append({"prompt": prompt, "completion": completion})
            if streamer is None or len(batch) > 1:
                out.write(f"--- [{start + offset}] ---\n{prompt}{completion}\n")
        out.flush()
    return results
