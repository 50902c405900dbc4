"""The model cards (README.md) `gptforge push` writes when a saved folder has none; every card is written here.

`model_card`, for a gptforge folder: front matter for the Hub (library, pipeline tag, license, datasets, base model),
the architecture read from `config.json`, the training figures recorded with the model, and how to load it with and
without gptforge, including what `trust_remote_code=True` runs (the flat files of `gptforge.remote_code`).
`native_card` is the short card of a native Transformers folder (`gptforge export`), `adapter_card` that of a PEFT
adapter (`finetune --lora`); `card_for_folder` picks the one a folder needs. The front matter is written by a YAML
emitter (`yaml.safe_dump`), so a value holding a colon, a quote or a newline reads back as written.
"""

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import MODEL_TYPE
from .remote_code import FLAT_MODULES
from .run_files import ADAPTER_CONFIG, METRICS_FILE, TRAINING_SUMMARY_FILE

# architecture suffix -> (pipeline tag, Auto class used in the card's snippet)
_PIPELINE_BY_SUFFIX = {
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForQuestionAnswering": ("question-answering", "AutoModelForQuestionAnswering"),
    "Model": ("feature-extraction", "AutoModel"),
}

# keys of training_summary.json that go to the card's front matter rather than its training table
_CARD_METADATA_KEYS = ("base_model", "datasets", "license")
# summary entries that are local paths: never published
_LOCAL_PATH_KEYS = ("output_dir", "final_dir")


def summarize_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Headline figures from `metrics.jsonl` records (the `Trainer` logs `pretrain`/`finetune` append there)."""
    records = [record for record in records if isinstance(record, Mapping)]

    def last(key: str) -> Any:
        return next((record[key] for record in reversed(records) if record.get(key) is not None), None)

    figures = {
        "steps": max((record["step"] for record in records if "step" in record), default=None),
        "tokens_seen": max((record["tokens"] for record in records if "tokens" in record), default=None),
        "final_train_loss": last("loss"),
        "eval_loss": last("eval_loss"),
        "eval_perplexity": last("eval_perplexity"),
        "eval_bits_per_byte": last("eval_bits_per_byte"),
        "train_runtime_s": last("train_runtime"),
    }
    return {key: value for key, value in figures.items() if value is not None}


def read_training_figures(folder: str | os.PathLike) -> dict[str, Any]:
    """The training figures recorded with a model, or `{}`.

    Contract with `pretrain`/`finetune`: `training_summary.json` in the model folder, a JSON object whose scalar
    entries are shown in the card in file order (what `pretrain.main` returns: `global_step`, `tokens_seen`,
    `train_loss`, `eval_loss`, `eval_perplexity`, `eval_bits_per_byte`, `train_runtime_s`, ...; local paths
    `output_dir`/`final_dir` are left out; a `recipe` object, training/recipes.py, becomes the line "Trained with
    the `NAME` recipe: ..."), plus optional `base_model` (str, for fine-tunes), `datasets` (Hub dataset ids) and `license`, which
    go to the front matter. Without it, `summarize_metrics` of `metrics.jsonl` in the folder or its parent (the run
    folder of `OUT/final`) is used.
    """
    folder = Path(folder)
    summary = folder / TRAINING_SUMMARY_FILE
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{summary} must hold a JSON object, got {type(data).__name__}")
        return {key: value for key, value in data.items() if key not in _LOCAL_PATH_KEYS and value is not None}
    for metrics in (folder / METRICS_FILE, folder.parent / METRICS_FILE):
        if metrics.is_file():
            lines = metrics.read_text(encoding="utf-8").splitlines()
            return summarize_metrics(json.loads(line) for line in lines if line.strip())
    return {}


def describe_recipe(record: Mapping[str, Any]) -> str:
    """The recipe a run trained with (`recipe` in training_summary.json, from training/recipes.py), as one line:
    its name and what it resolved to. Pretrain prints the same line when it starts."""
    floor = f"{record['min_lr_ratio']:g} of the peak"
    if record["lr_schedule"] == "warmup_stable_decay":
        schedule = f"warmup_stable_decay (linear cooldown to {floor} over the last {record['decay_fraction']:.0%})"
    else:
        schedule = f"{record['lr_schedule']} (to {floor})"
    optimizer = f"optimizer {record['optim']}"
    ratio, beta1 = record.get("adamw_lr_ratio", 1.0), record.get("embedding_beta1", 0.9)  # absent in older records
    if record["optim"] == "muon" and (ratio, beta1) != (1.0, 0.9):
        optimizer += f" (AdamW half at {ratio:g}x the learning rate, embedding and head beta1 {beta1:g})"
    parts = [
        optimizer,
        f"learning rate {record['learning_rate']:g}",
        f"warmup {record['warmup_steps']:g}",
        f"weight decay {record['weight_decay']:g}",
        f"schedule {schedule}",
    ]
    model = record.get("model") or {}
    parts.append(
        "model " + ", ".join(f"{key}={value}" for key, value in model.items()) if model else "the preset's model"
    )
    if record.get("explicit"):
        parts.append("set explicitly: " + ", ".join(record["explicit"]))
    return f"the `{record['name']}` recipe: " + "; ".join(parts)


def _format_figure(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def count_parameters(folder: str | os.PathLike) -> int | None:
    """Number of stored parameters (tied tensors once), read from the safetensors headers without loading them."""
    from safetensors import safe_open

    folder = Path(folder)
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                numel = 1
                for dim in f.get_slice(key).get_shape():
                    numel *= dim
                total += numel
    return total if files else None


def _native_equivalent(config: Any) -> str:
    from .modeling.conversion import gptforge_config_to_native

    try:
        native = gptforge_config_to_native(config)
    except ValueError:
        return "none (gptforge-specific features)"
    return {"gpt2": "GPT2LMHeadModel", "qwen3": "Qwen3ForCausalLM"}.get(native.model_type, "LlamaForCausalLM")


def _recipe_switches(config: Any) -> str:
    """The modded-nanogpt / nanochat switches that are on, in words (`getattr`: configs saved before they existed)."""
    switches = []
    if getattr(config, "qk_norm", False):
        switches.append(f"QK-norm ({config.norm_type} over each head's query and key)")
    if getattr(config, "zero_init", False):
        switches.append("zero-initialised output projections" + ("" if config.tie_word_embeddings else " and head"))
    if getattr(config, "final_logit_softcapping", None) is not None:
        switches.append(f"logits softcapped at {config.final_logit_softcapping}")
    if getattr(config, "embedding_shortcut", False):
        switches.append("embedding shortcut (learned x0 mixing into every block's input)")
    return ", ".join(switches) or "none"


def _architecture_rows(config: Any, architecture: str, parameters: int | None) -> list[tuple[str, str]]:
    heads = f"{config.num_attention_heads} query / {config.num_key_value_heads} key-value, head dim {config.head_dim}"
    position = config.position_embedding_type
    if position == "rope":
        position = (
            f"rotary (theta {config.rope_parameters.get('rope_theta')}, {config.rope_parameters.get('rope_type')})"
        )
    attention = "causal" if config.is_causal else "bidirectional"
    if config.attention_scale is not None:
        attention += f", scores scaled by {config.attention_scale}"
    norm = f"{config.norm_type}, {config.norm_position}-norm, eps {config.norm_eps}"
    if config.shared_post_norm:
        norm += ", one norm shared by both residual joins"
    return [
        ("class", f"`{architecture}`"),
        ("parameters", f"{parameters:,}" if parameters is not None else "unknown"),
        ("layers", str(config.num_hidden_layers)),
        ("hidden size", str(config.hidden_size)),
        ("attention heads", heads),
        ("attention", attention),
        ("MLP", f"{config.mlp_type}, {config.hidden_act}, intermediate {config.intermediate_size}"),
        ("positions", position),
        ("norm", norm),
        ("biases", f"attention {config.attention_bias}, MLP {config.mlp_bias}"),
        ("vocabulary", str(config.vocab_size)),
        ("context length", str(config.max_position_embeddings)),
        ("tied embeddings", str(config.tie_word_embeddings)),
        ("training-recipe switches", _recipe_switches(config)),
        ("dtype", str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")),
        ("exact native Transformers model", _native_equivalent(config)),
    ]


def _front_matter(
    front: Mapping[str, Any], datasets: str | Iterable[str] | None = None, base_model: str | None = None
) -> str:
    """The card's YAML front matter between its `---` lines, with the Hub's optional `datasets` and `base_model` keys
    last where given."""
    front = dict(front)
    if datasets:
        front["datasets"] = [datasets] if isinstance(datasets, str) else list(datasets)
    if base_model:
        front["base_model"] = base_model
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---"


def _table(rows: Iterable[tuple[str, str]], header: tuple[str, str]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {cell(key)} | {cell(value)} |" for key, value in rows]
    return "\n".join(lines)


TRUST_REMOTE_CODE_NOTE = f"""\
`trust_remote_code=True` lets Transformers import and run the Python files of this repository
({", ".join(f"`{name}.py`" for name in FLAT_MODULES)}) on your machine, with your permissions. gptforge
generates them from its own package source at save time. They import only torch,
transformers, packages transformers itself requires (tokenizers, huggingface_hub, safetensors), the Python standard
library and each other, and they contain no network, subprocess, `eval`/`exec` or file-writing code. The weights
are safetensors only, never pickle. Read the files before you trust them, and pin `revision=` to a commit you have
read: a later push to this repository can change the code that runs. With gptforge installed and imported
(`import gptforge`), the package's own classes load the model and no code from the repository runs."""


def model_card(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    figures: Mapping[str, Any] | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
) -> str:
    """A README.md for a saved gptforge folder: YAML front matter, architecture table, training figures, usage.

    `figures` default to `read_training_figures(folder)`; `license`, `datasets` and `base_model` default to the
    entries of the same name there, the license to "apache-2.0".
    """
    from .configuration import GPTForgeConfig

    folder = Path(folder)
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != GPTForgeConfig.model_type:
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not gptforge: write its README.md model card yourself"
        )
    config = GPTForgeConfig.from_pretrained(folder)
    architecture = (config.architectures or ["GPTForgeForCausalLM"])[0]
    suffix = architecture.removeprefix("GPTForge")
    pipeline_tag, auto_class = _PIPELINE_BY_SUFFIX.get(suffix, _PIPELINE_BY_SUFFIX["Model"])
    figures = dict(read_training_figures(folder) if figures is None else figures)
    metadata_defaults = {key: figures.pop(key, None) for key in _CARD_METADATA_KEYS}
    repo = repo_id or folder.resolve().name

    front = {
        "library_name": "transformers",
        "pipeline_tag": pipeline_tag,
        "tags": ["gptforge"],
        "license": license or metadata_defaults["license"] or "apache-2.0",
    }
    datasets = datasets or metadata_defaults["datasets"]
    base_model = base_model or metadata_defaults["base_model"]

    scalar_figures = [(key, _format_figure(value)) for key, value in figures.items() if not isinstance(value, dict)]
    training = (
        _table(scalar_figures, ("figure", "value"))
        if scalar_figures
        else f"No training figures were recorded (`{TRAINING_SUMMARY_FILE}` or `{METRICS_FILE}`)."
    )
    if isinstance(figures.get("recipe"), dict):
        training = f"Trained with {describe_recipe(figures['recipe'])}.\n\n{training}"
    if pipeline_tag == "text-generation":
        use = 'print(pipe("Once upon a time", max_new_tokens=40)[0]["generated_text"])'
    else:
        use = 'print(pipe("An example input"))'

    sections = [
        _front_matter(front, datasets, base_model),
        f"# {repo}",
        f"A `{architecture}` model built and trained with gptforge"
        + (f", fine-tuned from `{base_model}`." if base_model else "."),
        "## Architecture\n\n"
        + _table(_architecture_rows(config, architecture, count_parameters(folder)), ("property", "value")),
        "## Training\n\n" + training,
        "## Usage\n\nWith the gptforge package installed, its own classes load the model and no code from this "
        "repository runs.\n\n"
        "```python\n"
        "import gptforge  # registers the gptforge classes with the Auto classes\n"
        f"from transformers import {auto_class}, AutoTokenizer, pipeline\n\n"
        f'model = {auto_class}.from_pretrained("{repo}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        f'pipe = pipeline("{pipeline_tag}", model="{repo}")\n'
        f"{use}\n"
        "```\n\n"
        "With only torch and transformers: the code files of this repository are imported (see below).\n\n"
        "```python\n"
        f"from transformers import {auto_class}, AutoTokenizer, pipeline\n\n"
        'revision = "<commit sha you have read>"\n'
        f'model = {auto_class}.from_pretrained("{repo}", trust_remote_code=True, revision=revision)\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True, revision=revision)\n'
        f'pipe = pipeline("{pipeline_tag}", model="{repo}", trust_remote_code=True, revision=revision)\n'
        f"{use}\n"
        "```",
        "## What `trust_remote_code=True` means\n\n" + TRUST_REMOTE_CODE_NOTE,
    ]
    return "\n\n".join(sections) + "\n"


def native_card(
    model_type: str | None,
    repo_id: str,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
) -> str:
    """A short README.md for a native Transformers folder (a `gptforge export`): it loads without remote code."""
    front: dict[str, Any] = {
        "library_name": "transformers",
        "license": license or "apache-2.0",
        "pipeline_tag": "text-generation",
        "tags": ["gptforge", model_type],
    }
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A gptforge model exported as a native Transformers `{model_type}` model: it loads with the Auto classes "
        "and needs no remote code.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        "```",
    ]
    return _front_matter(front, datasets, base_model) + "\n\n" + "\n".join(body) + "\n"


def adapter_card(
    folder: str | os.PathLike,
    repo_id: str,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
) -> str:
    """A short README.md for a PEFT adapter folder: the base it needs (from `base_model`; the adapter's own
    `base_model_name_or_path` is usually a local path, which would mean nothing on the Hub) and how to load it."""
    adapter = json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = base_model or "BASE_MODEL"
    auto_class = (
        "AutoModelForSequenceClassification" if adapter.get("task_type") == "SEQ_CLS" else "AutoModelForCausalLM"
    )
    front: dict[str, Any] = {
        "library_name": "peft",
        "license": license or "apache-2.0",
        "tags": ["gptforge", "lora"],
    }
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A PEFT {adapter.get('peft_type', 'LoRA')} adapter (task {adapter.get('task_type')}, rank {adapter.get('r')}) "
        "for a gptforge model, written by `gptforge finetune --lora`.",
        "",
        "```python",
        "import gptforge  # or pass trust_remote_code=True to from_pretrained",
        "from peft import PeftModel",
        f"from transformers import {auto_class}",
        "",
        f'base = {auto_class}.from_pretrained("{base}")',
        f'model = PeftModel.from_pretrained(base, "{repo_id}")',
        "```",
    ]
    return _front_matter(front, datasets, base_model) + "\n\n" + "\n".join(body) + "\n"


def card_for_folder(
    folder: str | os.PathLike,
    repo_id: str,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
) -> str:
    """The card a saved folder needs: `adapter_card` for a PEFT adapter (no config.json), `model_card` for a gptforge
    model, `native_card` for any other Transformers model (what `gptforge export` writes)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return adapter_card(folder, repo_id, license=license, datasets=datasets, base_model=base_model)
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type == MODEL_TYPE:
        return model_card(folder, repo_id=repo_id, license=license, datasets=datasets, base_model=base_model)
    return native_card(model_type, repo_id, license=license, datasets=datasets, base_model=base_model)


__all__ = [
    "METRICS_FILE",
    "TRAINING_SUMMARY_FILE",
    "TRUST_REMOTE_CODE_NOTE",
    "adapter_card",
    "card_for_folder",
    "count_parameters",
    "model_card",
    "native_card",
    "read_training_figures",
    "summarize_metrics",
]
