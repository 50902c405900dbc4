"""`gptforge <subcommand> ...`: one console command for the whole loop.

Each subcommand lives in its own module of this package, so tests call the typed `main(...)` directly and the
command line stays a thin front. A module exposes:
- `HELP`: one line for `gptforge --help`;
- `main`: made by `gptforge.training.options.typed_main` from an options dataclass, whose fields are the flags
  (each with help); or, for a command not declared that way, `add_arguments(parser)` with its argparse flags;
- optionally `run(args)`: turns the parsed namespace into a call of `main` and returns an exit code, where the
  command maps errors to exit codes itself; otherwise the options are built from the flags and `main` is called.
"""

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptforge", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"gptforge.scripts.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gptforge.scripts.{module_name}":
                raise
            continue  # not built yet
        sub = subparsers.add_parser(
            name, help=module.HELP, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        options_type = getattr(getattr(module, "main", None), "options_type", None)
        if options_type is not None:
            add_dataclass_arguments(sub, options_type)
        else:
            module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = args._module
    if hasattr(module, "run"):
        return int(module.run(args) or 0)
    module.main.__wrapped__(from_namespace(module.main.options_type, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
