"""Command options declared once, as dataclass fields: the argparse flags and the typed `main(...)` derive from them.

A field's type, default and `metadata["help"]` make its flag: `--kebab-name` (or `metadata["flags"]`, the accepted
spellings), `bool` fields a switch (`store_true`; a field that defaults to True takes `metadata["flags"]` such as
`--no-progress` and stores False), `list[str]` fields a repeatable flag, `Literal[...]` fields a choice, and fields
without a default required flags (or positionals, with `metadata["positional"]`; a positional with `flags` as well
is accepted either way, `convert SOURCE OUT` or `convert --source SOURCE --out OUT`). `typed_main` turns a function of
the options object into the keyword function tests and other commands call: `main(out, batch_size=8)`.

    @dataclass
    class Options:
        output_dir: str = field(metadata={"help": "run folder", "flags": ["--out", "--output-dir"]})
        batch_size: int = field(default=16, metadata={"help": "examples per device per micro-step"})
"""

import argparse
import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .defaults import DEFAULT_VALIDATION_SPLIT, TEXT_COLUMN
from .errors import UsageError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # an options dataclass
# where argparse keeps the flag spelling of a field that is also a positional
_FLAG_DEST = "{}__flag"
# where argparse, and then the options object, keep the names of the fields given on the command line or to `main`
_GIVEN = "_given_fields"


def _recording(action: type[argparse.Action]) -> type[argparse.Action]:
    """`action` that also notes its field as given: a flag passed with its default value is still a choice."""

    class Recording(action):  # type: ignore[valid-type,misc]
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
            super().__call__(parser, namespace, values, option_string)
            setattr(namespace, _GIVEN, getattr(namespace, _GIVEN, frozenset()) | {self.dest})

    return Recording


def _flags(field: dataclasses.Field) -> list[str]:
    return list(field.metadata.get("flags", ["--" + field.name.replace("_", "-")]))


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type a value is parsed as, whether None is allowed) for `X`, `X | None`, `Optional[X]`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if str in args:  # `str | os.PathLike`: a path is read as its text
            args = [str]
        if len(args) != 1:
            raise TypeError(f"an option is one type or that type | None, got {annotation}")
        return args[0], True
    return annotation, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, options_type: type) -> None:
    """Add one flag per field of `options_type` to `parser` (fields with `metadata["cli"] is False` are skipped)."""
    hints = typing.get_type_hints(options_type)
    for field in dataclasses.fields(options_type):
        if field.metadata.get("cli", True) is False:
            continue
        if "help" not in field.metadata:
            raise TypeError(f"{options_type.__name__}.{field.name} has no help text")
        kind, _ = _base_type(hints[field.name])
        kwargs: dict[str, Any] = {"help": field.metadata["help"]}
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if "metavar" in field.metadata:
            kwargs["metavar"] = field.metadata["metavar"]
        if field.metadata.get("positional") and "flags" in field.metadata:
            # `convert SOURCE OUT` or `convert --source SOURCE --out OUT`: `from_namespace` reconciles the two
            name = field.metadata.get("metavar", field.name.upper())
            parser.add_argument(field.name, nargs="?", default=None, metavar=name, help=kwargs["help"])
            parser.add_argument(
                *_flags(field),
                dest=_FLAG_DEST.format(field.name),
                default=None,
                metavar=name,
                help=f"the same as {name}",
            )
            continue
        if field.metadata.get("positional"):
            kwargs["nargs"] = field.metadata.get("nargs")
            if has_default:
                kwargs["default"] = default
            parser.add_argument(field.name, **kwargs)
            continue
        if kind is bool:
            kwargs["action"] = "store_false" if default is True else "store_true"
        elif typing.get_origin(kind) is list:
            kwargs.update(action="append", type=typing.get_args(kind)[0])
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        elif "choices" in field.metadata:
            kwargs.update(choices=field.metadata["choices"], type=kind)
        else:
            kwargs["type"] = kind
        if has_default:
            kwargs["default"] = default
        else:
            kwargs["required"] = True
        kwargs["action"] = _recording(parser._registry_get("action", kwargs.get("action"), kwargs.get("action")))
        parser.add_argument(*_flags(field), dest=field.name, **kwargs)


def from_namespace(options_type: type[T], namespace: argparse.Namespace) -> T:
    """The options object from parsed flags (fields without a flag keep their defaults).

    A field that is a positional and a flag at once takes the flag's value when given, else the next positional
    given: `convert A --out B`, `convert --source A B` and `convert A B` all mean source A, output B.
    """
    values = {
        f.name: getattr(namespace, f.name) for f in dataclasses.fields(options_type) if hasattr(namespace, f.name)
    }
    either = [f for f in dataclasses.fields(options_type) if hasattr(namespace, _FLAG_DEST.format(f.name))]
    loose = [values[f.name] for f in either if values[f.name] is not None]
    for f in either:
        flagged = getattr(namespace, _FLAG_DEST.format(f.name))
        values[f.name] = flagged if flagged is not None else (loose.pop(0) if loose else None)
        if values[f.name] is None:
            name = f.metadata.get("metavar", f.name.upper())
            raise UsageError(f"missing {name}: give it as an argument or as {_flags(f)[0]} {name}")
    if loose:
        raise UsageError(f"unexpected extra argument {loose[0]!r}: every folder is already given")
    options = options_type(**values)
    setattr(options, _GIVEN, frozenset(getattr(namespace, _GIVEN, frozenset())) & set(values))
    return options


def given_fields(options: Any) -> frozenset[str]:
    """The fields the user chose: the flags on the command line, or the keywords passed to a typed `main`.

    An options object built directly (not through `from_namespace` or `typed_main`) counts the fields whose value
    differs from the default.
    """
    if hasattr(options, _GIVEN):
        return frozenset(getattr(options, _GIVEN))
    chosen = set()
    for field in dataclasses.fields(options):
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = field.default
        if default is dataclasses.MISSING or getattr(options, field.name) != default:
            chosen.add(field.name)
    return frozenset(chosen)


def flag_of(options_type: type, name: str) -> str:
    """The first spelling of a field's flag, for messages: `overrides` -> `--set`."""
    return _flags(next(f for f in dataclasses.fields(options_type) if f.name == name))[0]


def typed_main(options_type: type[T]) -> Callable[[Callable[[T], Any]], Callable[..., Any]]:
    """Expose `run(options)` as `main(required..., *, field=default, ...)`, with the fields as its signature."""
    hints = typing.get_type_hints(options_type)
    parameters = []
    for field in dataclasses.fields(options_type):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if not field.kw_only and not required:  # declared before `KW_ONLY`, with a default: `demo.main(out=...)`
            parameters.append(
                inspect.Parameter(
                    field.name,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    default=field.default,
                    annotation=hints[field.name],
                )
            )
        elif required:
            parameters.append(
                inspect.Parameter(field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hints[field.name])
            )
        else:
            default = None if field.default_factory is not dataclasses.MISSING else field.default
            parameters.append(
                inspect.Parameter(
                    field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hints[field.name]
                )
            )
    # required fields come first, whatever their place among the inherited fields
    signature = inspect.Signature(sorted(parameters, key=lambda p: (p.kind, p.default is not inspect.Parameter.empty)))

    def decorate(run: Callable[[T], Any]) -> Callable[..., Any]:
        @functools.wraps(run)
        def main(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            options = options_type(**bound.arguments)
            setattr(options, _GIVEN, frozenset(bound.arguments))
            return run(options)

        main.__signature__ = signature  # type: ignore[attr-defined]
        main.options_type = options_type  # type: ignore[attr-defined]
        return main

    return decorate


def option(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A dataclass field with its flag's help (and `flags`, `metavar`, `positional`, ... in `metadata`)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


# --------------------------------------------------------------------------------------------------------------------
# Option groups several commands share
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class DataOptions:
    """Where the texts come from (`sources.load_source`) and which column holds them."""

    data: str | None = option(
        None,
        "a text/code/Markdown file or folder, a json/jsonl/csv/parquet table, a save_to_disk folder, or a Hub "
        "dataset id; default: the stdlib corpus",
    )
    data_config: str | None = option(None, "configuration name of a Hub dataset")
    text_column: str = option(TEXT_COLUMN, "column holding the text")
    sample_by: Literal["document", "paragraph", "line"] = option(
        "document", "text files: one row per file, paragraph or line"
    )
    validation_split: float = option(
        DEFAULT_VALIDATION_SPLIT, "fraction held out when the data has no validation split"
    )
    encoding_errors: Literal["strict", "replace"] = option(
        "strict", "text that is not UTF-8: strict stops with the file and byte offset, replace reads U+FFFD"
    )
    max_files: int | None = option(None, "default corpus only: use this many files")
    cache_dir: str | None = option(None, "datasets cache folder (default: the datasets default)")

    def source_kwargs(self, seed: int) -> dict[str, Any]:
        """The keywords `sources.load_data` / `load_source` take besides the source itself."""
        return dict(
            data_config=self.data_config,
            validation_split=self.validation_split,
            sample_by=self.sample_by,
            encoding_errors=self.encoding_errors,
            seed=seed,
            cache_dir=self.cache_dir,
            max_files=self.max_files,
        )


@dataclasses.dataclass(kw_only=True)
class TokenizeOptions:
    """For commands that tokenise with `datasets.map`."""

    num_proc: int | None = option(None, "processes for datasets.map (default: auto)")


@dataclasses.dataclass(kw_only=True)
class TrainerOptions:
    """The Trainer knobs pretrain and finetune share (each command sets its own defaults where they differ)."""

    batch_size: int = option(16, "examples per device per micro-step")
    gradient_accumulation_steps: int = option(1, "micro-steps per optimizer step")
    learning_rate: float | None = option(6e-4, "peak AdamW learning rate")
    weight_decay: float = option(0.1, "AdamW decoupled weight decay")
    warmup_steps: float = option(0.05, "linear warmup steps (a value < 1 is a fraction)")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 disables)")
    max_steps: int | None = option(None, "optimizer steps (overrides --epochs)")
    epochs: float = option(1.0, "passes over the training set")
    precision: Literal["auto", "bf16", "fp32"] = option("auto", "auto: bf16 where the GPU supports it")
    gradient_checkpointing: bool = option(False, "recompute activations (less memory)")
    logging_steps: int = option(10, "log train loss every N steps")
    report_to: str = option("none", "Trainer integrations, comma-separated (tensorboard, wandb, ...)")
    seed: int = option(0, "seeds init, data order, the validation split and subsets")
    progress: bool = option(True, "no progress bars", flags=["--no-progress"])


@dataclasses.dataclass(kw_only=True)
class ScheduleOptions:
    """Pretraining's optimizer and learning-rate schedule: with the Trainer knobs, what a recipe sets besides the
    model (training/recipes.py). The defaults are the `classic` recipe's; a pretrain run takes its recipe's value
    for each of these it is not given."""

    optim: Literal["adamw", "muon"] = option(
        "adamw",
        "muon: Muon for the attention and MLP matrices, AdamW for the rest, both at --learning-rate (README, Muon)",
    )
    lr_schedule: Literal["cosine", "warmup_stable_decay"] = option(
        "cosine",
        "after warmup: cosine decay, or warmup_stable_decay (constant, then a linear cooldown over --decay-fraction)",
    )
    min_lr_ratio: float = option(0.1, "the schedule decays to this fraction of the peak")
    decay_fraction: float = option(0.4, "warmup_stable_decay: the share of the steps the cooldown takes")
    embedding_beta1: float = option(
        0.9, "--optim muon: Adam's beta1 for the embeddings and the head (norms and scalars keep 0.9)"
    )
    adamw_lr_ratio: float = option(
        1.0, "--optim muon: the AdamW half's (embeddings, head, norms) learning rate as a multiple of --learning-rate"
    )
