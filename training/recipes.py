"""Training recipes: a whole choice of model switches, optimizer, schedule and learning rates under one name.

`gptforge pretrain --recipe NAME` applies `RECIPES[NAME]` on top of any preset or config file; a flag given
explicitly (`--learning-rate`, `--optim`, ...) and a `--set field=value` override win over the recipe's value. A plain
dict in the LitGPT manner, so a recipe reads as what it changes:

- `model`: `GPTForgeConfig` fields set on top of the preset (`--set` wins field by field);
- `optim` ("adamw" or "muon", training/muon.py), `lr_schedule` (a Transformers `lr_scheduler_type`: "cosine",
  with `min_lr_ratio` as its floor, or "warmup_stable_decay", whose linear cooldown takes the last `decay_fraction`
  of the steps down to `min_lr_ratio`), `learning_rate`, `warmup_steps` (a value < 1 is a fraction),
  `weight_decay`, and under Muon `adamw_lr_ratio` (the AdamW half's learning rate as a multiple of
  `learning_rate`) and `embedding_beta1` (Adam's beta1 for the embeddings and head): the pretrain options of the
  same names.

Recipes, and the exports each keeps (`gptforge export` to native Transformers classes, and GGUF):

- `modern`, the default: Muon for the hidden matrices and AdamW for the embeddings, head and norms (at 3x the
  learning rate, and beta1 0.8 for the embeddings and head), a 2% warmup, then warmup-stable-decay with a linear
  cooldown to 0 over the last 20% of the steps, RMS-normed queries and keys (`qk_norm`), zero-initialised output
  projections and untied head (`zero_init`), and the token embedding added back into each block's input
  (`embedding_shortcut`). The ablation (benchmarks/README.md, "Recipe ablation") kept each of them: Muon, the
  schedule, qk_norm and the shortcut each paid on their own over `classic`, beyond the seed noise; the AdamW half's
  learning rate and beta1 and the short warmup paid inside the recipe; zero_init hurt on its own under AdamW but
  paid inside the recipe. Left out, as switches that did not pay: squared ReLU (`--set hidden_act=relu2`; it helped
  over classic on average, but the recipe trained better without it, on both seeds), logit soft-capping (`--set
  final_logit_softcapping=15`; within the noise, and a tanh over every logit costs about 9% of a `tiny` step on
  CPU) and untying a tied head (`--set tie_word_embeddings=false`; the Llama-style presets are untied already).
  Keeps no native or GGUF export: the embedding shortcut has no Llama or Qwen3 counterpart.
- `modern-exportable`: the part of `modern` that keeps the native and GGUF exports: its optimizer and schedule, and
  zero_init (an initialisation only: the trained weights are plain ones). Left out: `qk_norm` (it exports only
  through Qwen3's native class, and no GGUF architecture gptforge writes has it) and the embedding shortcut.
- `classic`: the 2019 recipe, the option defaults exactly: AdamW, linear warmup then cosine decay to 10% of the
  peak, the preset's own architecture. Keeps every export the preset has.

`DEFAULT_RECIPE` is what a run without `--recipe` trains with. This module imports no torch, so `gptforge --help`
lists the names at once.
"""

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from .errors import UsageError
from .options import ScheduleOptions, TrainerOptions

DEFAULT_RECIPE = "modern"
# the pretrain options a recipe sets (the model switches go under "model")
TRAINING_KEYS = (
    "optim",
    "lr_schedule",
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "min_lr_ratio",
    "decay_fraction",
    "embedding_beta1",
    "adamw_lr_ratio",
)


def option_default(name: str) -> Any:
    """The pretrain option's own default: `classic`'s value, and what a run recorded before the option existed used."""
    for options_type in (TrainerOptions, ScheduleOptions):
        for field in dataclasses.fields(options_type):
            if field.name == name:
                return field.default
    raise KeyError(name)


# `classic` is the option defaults, read from the options themselves: a run with `--recipe classic` is a run without it
_CLASSIC: dict[str, Any] = {"model": {}, **{key: option_default(key) for key in TRAINING_KEYS}}

# What both Muon recipes train with besides the model (benchmarks/README.md, "Recipe ablation" and "Speed to a
# target"): the AdamW half (embeddings, head, norms) at 3x the Muon half's learning rate, a shorter first-moment
# memory for the embeddings and head (modded-nanogpt's beta1 0.8), and a 2% warmup; each trained better than
# without it, inside the recipe.
_MUON_WSD: dict[str, Any] = {
    "optim": "muon",
    "adamw_lr_ratio": 3.0,
    "embedding_beta1": 0.8,
    "warmup_steps": 0.02,
    "lr_schedule": "warmup_stable_decay",
    "decay_fraction": 0.2,
    "min_lr_ratio": 0.0,
}

RECIPES: dict[str, dict[str, Any]] = {
    "classic": _CLASSIC,
    "modern": {
        **_CLASSIC,
        "model": {
            "qk_norm": True,
            "zero_init": True,
            "embedding_shortcut": True,
        },
        **_MUON_WSD,
    },
    "modern-exportable": {
        **_CLASSIC,
        "model": {"zero_init": True},
        **_MUON_WSD,
    },
}


def get_recipe(name: str) -> dict[str, Any]:
    """`RECIPES[name]`; `UsageError` naming the recipes for any other name."""
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def resolve(
    name: str | None,
    options: Any,
    given: Collection[str],
    recorded: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a run trains with: `{"name", <TRAINING_KEYS>..., "model", "explicit"}`.

    Each training value is the option's own where the user gave that option (`given`, see
    `options.given_fields`), else the recipe's. `recorded` is the record of the run being resumed: its recipe, and
    its values, are used again (a recipe whose definition changed since does not change a resumed run); asking for
    another recipe by name is a `UsageError`, as other flags that contradict a checkpoint are (training/resume.py).
    `explicit` lists the options that won over the recipe.
    """
    if recorded is not None:
        if name is not None and "recipe" in given and name != recorded["name"]:
            raise UsageError(
                f"--resume continues a run trained with the {recorded['name']!r} recipe, not {name!r}; drop "
                "--recipe to resume, or pass --overwrite without --resume to start over"
            )
        recipe: Mapping[str, Any] = recorded
        name = recorded["name"]
    else:
        name = name if name is not None else DEFAULT_RECIPE
        recipe = get_recipe(name)
    # a run recorded before a training value existed trained with that option's default
    recipe = {key: option_default(key) for key in TRAINING_KEYS} | dict(recipe)
    values = {key: getattr(options, key) if key in given else recipe[key] for key in TRAINING_KEYS}
    explicit = sorted(key for key in TRAINING_KEYS if key in given and getattr(options, key) != recipe[key])
    return {"name": name, **values, "model": dict(recipe.get("model", {})), "explicit": explicit}


def model_overrides(
    record: dict[str, Any], overrides: Mapping[str, Any], config_fields: Collection[str]
) -> dict[str, Any]:
    """The config overrides of a new run: the recipe's model switches, then the user's `--set` values over them
    (`record["model"]` then holds the values used, and `record["explicit"]` names the fields `--set` changed).

    `UsageError` when the recipe sets a field this `GPTForgeConfig` does not have, raised only when that recipe is used.
    """
    missing = sorted(key for key in record["model"] if key not in config_fields and key not in overrides)
    if missing:
        raise UsageError(
            f"the {record['name']!r} recipe sets config field(s) {missing} that this GPTForgeConfig does not have; "
            f"pick another recipe ({', '.join(RECIPES)})"
        )
    changed = [key for key in record["model"] if key in overrides and overrides[key] != record["model"][key]]
    record["model"] = {key: overrides.get(key, value) for key, value in record["model"].items()}
    record["explicit"] = [*record["explicit"], *changed]
    return {**record["model"], **overrides}
