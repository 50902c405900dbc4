"""Streaming generated text to a terminal: the streamer `gptforge generate` hands to `generate`."""

import shutil
import sys
from typing import Any, TextIO

import torch
from transformers.generation.streamers import BaseStreamer


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
        self.rows: list[list[int]] = []  # one per sequence, made from the prompt batch (at least one row)
        self.done: list[bool] = []
        self.printed = 0  # characters of row 0 already written (single-row mode)
        self.drawn = 0  # preview lines currently on screen (live mode)

    def put(self, value: torch.Tensor) -> None:
        if not self.rows:  # the prompt batch
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
        if len(self.rows) == 1:
            text = self._text(0)
            self.stream.write(text[self.printed :] + "\n")
            self.stream.flush()
        elif self.live and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # erase the previews; the caller prints full texts
            self.stream.flush()
            self.drawn = 0

    def completions(self) -> list[str]:
        return [self._text(i) for i in range(len(self.rows))]

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
