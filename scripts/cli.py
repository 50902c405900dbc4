"""`gptforge <subcommand> ...`: one console command for the whole loop.

Each subcommand lives in its own module of this package, so tests call the typed `main(...)` directly and the
command line stays a thin front. A module exposes:
- `HELP`: one line for `gptforge --help`;
- `main`: made by `gptforge.training.options.typed_main` from an options dataclass, whose fields are the flags
  (each with help).
A module's top level imports nothing heavy (no torch, Transformers, datasets): `gptforge --help`, `SUB --help` and a
mistyped flag answer at once, and the heavy imports happen inside `main` when a command runs.

Errors: whatever the user can get wrong ends in one line on stderr, `error: <message>`, with exit status 2 for a usage
error (a flag argparse rejects, `UsageError`) and 1 for a runtime error (any other `ValueError`, `OSError`,
`RuntimeError` or `ImportError` escaping a command); Ctrl-C exits 130. `--debug` (before or after the subcommand) or
`GPTFORGE_DEBUG=1` lets the exception through, traceback and all.
"""

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, NoReturn, TypeVar, overload

from ..training.errors import UsageError
from ..training.options import add_dataclass_arguments, from_namespace

# subcommand name -> module (in gptforge.scripts) that implements it
SUBCOMMANDS: dict[str, str] = {
    "train-tokenizer": "train_tokenizer",
    "pretrain": "pretrain",
    "finetune": "finetune",
    "generate": "generate",
    "evaluate": "evaluate",
    "convert": "convert",
    "export": "export",
    "push": "push",
    "serve": "serve",
    "demo": "demo",
}
USAGE_EXIT, RUNTIME_EXIT, INTERRUPT_EXIT = 2, 1, 130
_N = TypeVar("_N")  # the namespace object argparse fills (argparse.Namespace unless one is given)
# exceptions reported as one line (exit 1); anything else is a bug and keeps its traceback
RUNTIME_ERRORS = (ValueError, OSError, RuntimeError, ImportError)
# Packages that Transformers and PEFT import when they are installed log warnings at import time that say nothing
# about the run (torchao's CUDA-only extensions on a CPU build, bitsandbytes' offline kernel lookup, torch's pytree
# deprecations). Kept to errors unless --debug, so a command's own output, and its one-line error, stand alone.
QUIET_LOGGERS = ("torchao", "bitsandbytes", "kernels", "torch.utils._pytree")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors in the one-line form every other error takes (argparse prints usage and `prog: error`)."""

    def error(self, message: str) -> NoReturn:
        report(f"{message} (see '{self.prog} --help')")
        sys.exit(USAGE_EXIT)

    @overload
    def parse_args(self, args: Iterable[str] | None = None, namespace: None = None) -> argparse.Namespace: ...
    @overload
    def parse_args(self, args: Iterable[str] | None, namespace: _N) -> _N: ...
    @overload
    def parse_args(self, *, namespace: _N) -> _N: ...

    def parse_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        # unknown flags reach the top-level parser: point at the subcommand's help, where the right ones are
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "_prog", self.prog)
            report(f"unrecognized arguments: {' '.join(extras)} (see '{prog} --help')")
            sys.exit(USAGE_EXIT)
        return parsed


def report(message: str) -> None:
    """`error: message` on stderr, on one line whatever the message's own line breaks."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    print("error: " + " ".join(lines), file=sys.stderr, flush=True)


def debugging(args: argparse.Namespace | None = None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("GPTFORGE_DEBUG", "") not in ("", "0")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="gptforge", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or GPTFORGE_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(f"gptforge.scripts.{module_name}")
        sub = subparsers.add_parser(
            name, help=module.HELP, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_dataclass_arguments(sub, module.main.options_type)
        # also after the subcommand; SUPPRESS keeps a top-level `--debug` from being reset by the subparser's default
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.set_defaults(_module=module, _prog=sub.prog)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0, 1, 2 or 130) after printing any error as one line."""
    args = build_parser().parse_args(argv)  # exits 2 itself on a flag it rejects
    module = args._module
    if not debugging(args):
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        module.main.__wrapped__(from_namespace(module.main.options_type, args))
    except KeyboardInterrupt:
        if debugging(args):
            raise
        return INTERRUPT_EXIT
    except UsageError as exc:
        if debugging(args):
            raise
        report(str(exc) or type(exc).__name__)
        return USAGE_EXIT
    except RUNTIME_ERRORS as exc:
        if debugging(args):
            raise
        report(str(exc) or type(exc).__name__)
        return RUNTIME_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
