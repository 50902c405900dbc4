"""`gptforge <subcommand> ...`: one console command for the whole loop.

Each subcommand lives in its own module of this package and exposes three things, so tests call the typed
`main(...)` directly and the command line stays a thin front:
- `HELP`: one line for `gptforge --help`;
- `add_arguments(parser)`: its argparse flags, each with help;
- `run(args)`: turns the parsed namespace into a call of its typed `main(...)` and returns an exit code.
"""

import argparse
import importlib
import sys

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
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
