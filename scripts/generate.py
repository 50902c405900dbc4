"""Generate continuations of prompts with a model folder: greedy, sampling or beam search, streamed as they come.

Prompts come from the arguments, or from stdin (one per line; write `\\n` for a newline inside a prompt) when none
are given. They run in batches (`--batch-size`, left-padded). With a batch of one, tokens are printed as they are
generated; with several prompts on a terminal, a live one-line preview per prompt is redrawn as tokens arrive and
the full texts are printed at the end. Beam search cannot stream (Transformers' limit): its results print at the end.

Each prompt is preceded by the BOS token (`<|endoftext|>`), as every document is in pretraining; `--no-bos` turns
this off.

Usage:
    gptforge generate --model runs/demo/pretrain/final "def fibonacci(n):" "import os"
    echo 'class Stack:\\n    def push(self, item):' | gptforge generate --model runs/x/final --max-new-tokens 80
    gptforge generate --model runs/x/final --sample --temperature 0.8 --top-p 0.95 --seed 1 "for i in range("
    gptforge generate --model runs/x/final --num-beams 4 "def add(a, b):"
"""

import argparse
import os
import shutil
import sys
from typing import Any, TextIO

import torch
from transformers import AutoModelForCausalLM, set_seed
from transformers.generation.streamers import BaseStreamer

from .pretrain import load_tokenizer

HELP = "generate continuations of prompts (args or stdin), streamed; greedy, sampling or beams"


class TerminalStreamer(BaseStreamer):
    """Streams a batch of generations to a text stream.

    `generate` hands over the prompt ids first, then one (batch,) tensor of new tokens per step; rows that have
    finished keep receiving padding, which is ignored after their EOS. One row: the new text is written as soon as it
    decodes to whole characters. Several rows on a terminal (`live`): one preview line per row is redrawn each step.
    Several rows elsewhere: nothing until `completions()` (a log file should not fill with redraw codes).
    """

    def __init__(self, tokenizer: Any, stop_ids: set[int], stream: TextIO = sys.stdout, live: bool | None = None):
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.rows: list[list[int]] | None = None
        self.done: list[bool] = []
        self.printed = 0  # characters of row 0 already written (single-row mode)
        self.drawn = 0  # preview lines currently on screen (live mode)

    def put(self, value: torch.Tensor) -> None:
        if self.rows is None:  # the prompt batch
            batch = value.shape[0] if value.dim() > 1 else 1
            self.rows, self.done = [[] for _ in range(batch)], [False] * batch
            return
        for i, token in enumerate(value.view(-1).tolist()):
            if self.done[i]:
                continue
            if token in self.stop_ids:
                self.done[i] = True
            else:
                self.rows[i].append(token)
        self._render()

    def end(self) -> None:
        if self.rows is not None and len(self.rows) == 1:
            text = self._text(0)
            self.stream.write(text[self.printed :] + "\n")
            self.stream.flush()
        elif self.live and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # erase the previews; the caller prints full texts
            self.stream.flush()
            self.drawn = 0

    def completions(self) -> list[str]:
        return [self._text(i) for i in range(len(self.rows or []))]

    def _text(self, row: int) -> str:
        return self.tokenizer.decode(self.rows[row], skip_special_tokens=True)

    def _render(self) -> None:
        if len(self.rows) == 1:
            text = self._text(0)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return
            self.stream.write(text[self.printed :])
            self.stream.flush()
            self.printed = len(text)
        elif self.live:
            width = shutil.get_terminal_size((100, 20)).columns - 8
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F")
            for i in range(len(self.rows)):
                preview = self._text(i).replace("\n", "⏎")[-width:]
                self.stream.write(f"\x1b[2K[{i}] {preview}\n")
            self.drawn = len(self.rows)
            self.stream.flush()


def read_prompts(prompts: list[str] | None, stdin: TextIO | None = None) -> list[str]:
    """The given prompts, or stdin's non-empty lines with `\\n` and `\\t` unescaped."""
    if prompts:
        return list(prompts)
    stdin = stdin or sys.stdin
    lines = [line.rstrip("\n") for line in stdin if line.strip()]
    prompts = [line.replace("\\n", "\n").replace("\\t", "\t") for line in lines]
    if not prompts:
        raise ValueError("no prompts: pass them as arguments or one per line on stdin")
    return prompts


def main(
    model: str | os.PathLike,
    prompts: list[str] | None = None,
    *,
    max_new_tokens: int = 64,
    sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int = 1,
    repetition_penalty: float | None = None,
    batch_size: int = 8,
    bos: bool = True,
    seed: int = 0,
    stream: bool = True,
    out: TextIO | None = None,
) -> list[dict[str, str]]:
    """Generate and return `[{"prompt": ..., "completion": ...}]` in prompt order (completions exclude the prompt).

    Greedy unless `sample` (then `temperature`, `top_k`, `top_p` apply); `num_beams > 1` is beam search. Sampling
    is reproducible for a given `seed` and batch composition.
    """
    out = out or sys.stdout
    prompts = read_prompts(prompts)
    if not os.path.isdir(model):
        raise FileNotFoundError(f"no model folder at {str(model)!r}")
    tokenizer = load_tokenizer(model)
    tokenizer.padding_side = "left"  # decoder-only: generation continues from the last position of every row
    net = AutoModelForCausalLM.from_pretrained(model).eval()
    stop_ids = {i for i in [tokenizer.eos_token_id, tokenizer.pad_token_id] if i is not None}

    settings: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        num_beams=num_beams,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if sample:
        settings.update(temperature=temperature, top_k=top_k, top_p=top_p)
    if repetition_penalty is not None:
        settings["repetition_penalty"] = repetition_penalty
    can_stream = stream and num_beams == 1

    results: list[dict[str, str]] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        prefix = tokenizer.bos_token if bos and tokenizer.bos_token else ""
        encoded = tokenizer([prefix + p for p in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        streamer = TerminalStreamer(tokenizer, stop_ids, stream=out) if can_stream else None
        if streamer is not None and len(batch) == 1:
            out.write(f"--- [{start}] ---\n{batch[0]}")
            out.flush()
        set_seed(seed + start)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", nargs="*", help="prompts; none: read one per line from stdin")
    parser.add_argument("--model", required=True, help="model folder (gptforge, or any causal LM Transformers loads)")
    # --- decoding ---
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per prompt")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with this mass")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (> 1 disables streaming)")
    parser.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeats")
    # --- batching and output ---
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated together")
    parser.add_argument("--no-bos", action="store_true", help="do not put the BOS token before each prompt")
    parser.add_argument("--no-stream", action="store_true", help="print the results at the end only")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def run(args: argparse.Namespace) -> int:
    main(
        args.model,
        args.prompts,
        max_new_tokens=args.max_new_tokens,
        sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        repetition_penalty=args.repetition_penalty,
        batch_size=args.batch_size,
        bos=not args.no_bos,
        seed=args.seed,
        stream=not args.no_stream,
    )
    return 0
