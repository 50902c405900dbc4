"""`pretrain --recipe`: the recipes, how explicit flags win over them, what a run records, and the ablation harness.

Recipe resolution is tested on dicts and parsed flags, so it holds whatever model switches the config has; the runs
are tiny (a 2-layer model, a few steps on a small code corpus).
"""

import dataclasses
import json
import math
from pathlib import Path

import datasets
import pytest
import torch
from _helpers import write_jsonl
from safetensors.torch import load_file

from gptforge.configuration import GPTForgeConfig
from gptforge.model_card import describe_recipe, model_card
from gptforge.scripts import cli, pretrain
from gptforge.training import recipes
from gptforge.training.config import config_fields
from gptforge.training.encoding import packer, token_byte_lengths
from gptforge.training.errors import UsageError
from gptforge.training.folders import load_tokenizer
from gptforge.training.options import from_namespace, given_fields, option, typed_main

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
MODERN_FIELDS = sorted(recipes.RECIPES["modern"]["model"])


def parsed(*argv: str) -> pretrain.PretrainOptions:
    return from_namespace(pretrain.PretrainOptions, cli.build_parser().parse_args(["pretrain", "--out", "o", *argv]))


# --- the recipes and their resolution ------------------------------------------------------------------------------


def test_classic_is_the_option_defaults_and_modern_the_default_recipe():
    defaults = pretrain.PretrainOptions(output_dir="o")
    classic = recipes.RECIPES["classic"]
    assert recipes.DEFAULT_RECIPE == "modern"
    assert classic["model"] == {}
    assert {key: classic[key] for key in recipes.TRAINING_KEYS} == {
        key: getattr(defaults, key) for key in recipes.TRAINING_KEYS
    }
    for name, recipe in recipes.RECIPES.items():
        assert set(recipe) == {"model", *recipes.TRAINING_KEYS}, name
    modern = recipes.RECIPES["modern"]
    assert modern["model"] == {
        "qk_norm": True,
        "zero_init": True,
        "embedding_shortcut": True,
    }
    assert {key: modern[key] for key in recipes.TRAINING_KEYS} == {
        **{key: classic[key] for key in recipes.TRAINING_KEYS},
        "optim": "muon",
        "adamw_lr_ratio": 3.0,
        "embedding_beta1": 0.8,
        "warmup_steps": 0.02,
        "lr_schedule": "warmup_stable_decay",
        "decay_fraction": 0.2,
        "min_lr_ratio": 0.0,
    }
    exportable = recipes.RECIPES["modern-exportable"]
    assert exportable["model"] == {"zero_init": True}
    assert {key: exportable[key] for key in recipes.TRAINING_KEYS} == {
        key: modern[key] for key in recipes.TRAINING_KEYS
    }


def test_given_fields_from_the_command_line_count_a_flag_passed_at_its_default():
    options = parsed("--learning-rate", "6e-4", "--no-progress", "--set", "hidden_size=8", "--recipe", "modern")
    assert given_fields(options) == {"output_dir", "learning_rate", "progress", "overrides", "recipe"}
    assert given_fields(parsed()) == {"output_dir"}


def test_given_fields_of_a_typed_main_are_its_keywords():
    @dataclasses.dataclass
    class Options:
        out: str = option(help="out")
        _: dataclasses.KW_ONLY
        rate: float = option(1.0, "rate")
        steps: int = option(3, "steps")

    @typed_main(Options)
    def main(options: Options) -> frozenset[str]:
        return given_fields(options)

    assert main("x", rate=1.0) == {"out", "rate"}
    # built directly: the fields that differ from their defaults
    assert given_fields(Options("x", steps=4)) == {"out", "steps"}


@pytest.fixture
def trial_recipe(monkeypatch) -> dict:
    """A recipe that changes every training value and one model field, so each precedence shows."""
    recipe = {
        "model": {"hidden_size": 48, "tie_word_embeddings": False},
        "optim": "muon",
        "lr_schedule": "warmup_stable_decay",
        "learning_rate": 3e-3,
        "warmup_steps": 0.1,
        "weight_decay": 0.0,
        "min_lr_ratio": 0.0,
        "decay_fraction": 0.3,
        "embedding_beta1": 0.85,
        "adamw_lr_ratio": 2.0,
    }
    monkeypatch.setitem(recipes.RECIPES, "trial", recipe)
    return recipe


def test_explicit_flags_and_set_win_over_the_recipe(trial_recipe):
    # --learning-rate at its default value is still an explicit choice; --set replaces one model field only
    options = parsed("--recipe", "trial", "--learning-rate", "6e-4", "--optim", "adamw", "--set", "hidden_size=64")
    record = recipes.resolve(options.recipe, options, given_fields(options))
    assert {key: record[key] for key in recipes.TRAINING_KEYS} == {
        **{key: trial_recipe[key] for key in recipes.TRAINING_KEYS},
        "learning_rate": 6e-4,
        "optim": "adamw",
    }
    assert record["explicit"] == ["learning_rate", "optim"]
    overrides = recipes.model_overrides(record, {"hidden_size": 64}, config_fields())
    assert overrides == {"hidden_size": 64, "tie_word_embeddings": False}
    assert record["model"] == {"hidden_size": 64, "tie_word_embeddings": False}
    assert record["explicit"] == ["learning_rate", "optim", "hidden_size"]
    # without --recipe: the default recipe, under the flags given
    plain = parsed("--learning-rate", "1e-3")
    record = recipes.resolve(plain.recipe, plain, given_fields(plain))
    assert (record["name"], record["learning_rate"], record["optim"]) == ("modern", 1e-3, "muon")
    assert record["model"] == recipes.RECIPES["modern"]["model"] and record["explicit"] == ["learning_rate"]


def test_resume_keeps_the_recorded_recipe_and_refuses_another(trial_recipe):
    recorded = {**recipes.resolve("trial", parsed(), set()), "learning_rate": 5e-3}  # as the run recorded it
    again = recipes.resolve(None, parsed(), {"output_dir"}, recorded)
    assert again["name"] == "trial" and again["learning_rate"] == 5e-3  # not the table's value
    assert recipes.resolve("trial", parsed("--recipe", "trial"), {"recipe"}, recorded)["name"] == "trial"
    with pytest.raises(UsageError) as caught:
        recipes.resolve("classic", parsed("--recipe", "classic"), {"recipe"}, recorded)
    assert str(caught.value) == (
        "--resume continues a run trained with the 'trial' recipe, not 'classic'; drop --recipe to resume, or pass "
        "--overwrite without --resume to start over"
    )
    # a run recorded before a training value existed resumes with that option's default, which it trained with
    older = {key: value for key, value in recorded.items() if key not in ("adamw_lr_ratio", "embedding_beta1")}
    again = recipes.resolve(None, parsed(), {"output_dir"}, older)
    assert (again["adamw_lr_ratio"], again["embedding_beta1"], again["decay_fraction"]) == (1.0, 0.9, 0.3)


@pytest.mark.parametrize(("flag", "value"), [("--adamw-lr-ratio", "2"), ("--embedding-beta1", "0.8")])
def test_the_adamw_half_options_need_muon(tmp_path, capsys, flag, value):
    argv = ["pretrain", "--out", str(tmp_path / "run"), "--optim", "adamw", flag, value]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: {flag} sets the AdamW half of --optim muon; with --optim adamw every parameter trains with "
        "--learning-rate and Adam betas (0.9, 0.95)\n"
    )
    assert not (tmp_path / "run").exists()


def test_unknown_recipe_is_a_one_line_usage_error(tmp_path, capsys):
    message = "unknown recipe 'nope'; recipes: classic, modern, modern-exportable"
    with pytest.raises(UsageError) as caught:
        pretrain.main(tmp_path / "run", recipe="nope")
    assert str(caught.value) == message
    assert not (tmp_path / "run").exists()
    assert cli.main(["pretrain", "--out", str(tmp_path / "run"), "--recipe", "nope"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_recipe_with_fields_the_config_lacks_is_a_usage_error_naming_them():
    record = recipes.resolve("modern", parsed(), set())
    with pytest.raises(UsageError) as caught:
        recipes.model_overrides(record, {}, {"hidden_size"})
    assert str(caught.value) == (
        f"the 'modern' recipe sets config field(s) {MODERN_FIELDS} that this GPTForgeConfig does not have; pick "
        "another recipe (classic, modern, modern-exportable)"
    )


def test_describe_recipe():
    assert describe_recipe(recipes.resolve(None, parsed(), set())) == (
        "the `modern` recipe: optimizer muon (AdamW half at 3x the learning rate, embedding and head beta1 0.8); "
        "learning rate 0.0006; warmup 0.02; weight decay 0.1; schedule warmup_stable_decay (linear cooldown to 0 of "
        "the peak over the last 20%); model qk_norm=True, zero_init=True, embedding_shortcut=True"
    )
    assert describe_recipe(recipes.resolve("classic", parsed(), set())) == (
        "the `classic` recipe: optimizer adamw; learning rate 0.0006; warmup 0.05; weight decay 0.1; schedule cosine "
        "(to 0.1 of the peak); the preset's model"
    )
    assert describe_recipe(recipes.resolve("modern-exportable", parsed(), set())) == (
        "the `modern-exportable` recipe: optimizer muon (AdamW half at 3x the learning rate, embedding and head "
        "beta1 0.8); learning rate 0.0006; warmup 0.02; weight decay 0.1; schedule warmup_stable_decay (linear "
        "cooldown to 0 of the peak over the last 20%); model zero_init=True"
    )


# --- the schedule and bits per byte --------------------------------------------------------------------------------


def test_warmup_stable_decay_takes_its_cooldown_as_a_fraction(tmp_path):
    from transformers import AutoModelForCausalLM

    from gptforge.training.arguments import training_arguments
    from gptforge.training.trainer import GPTForgeTrainer

    options = pretrain.PretrainOptions(output_dir=tmp_path, warmup_steps=1, learning_rate=1.0, progress=False)
    args = training_arguments(
        tmp_path,
        options,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"num_decay_steps": 0.4, "decay_type": "linear", "min_lr_ratio": 0.0},
    )
    model = AutoModelForCausalLM.from_config(GPTForgeConfig.from_preset("tiny", **TINY))
    trainer = GPTForgeTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    # 1 warmup step, 5 stable, then 4 steps down to 0
    assert lrs == pytest.approx([0.0, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25])


def test_token_byte_lengths_count_the_utf8_bytes_of_a_byte_level_tokenizer():
    from gptforge.tokenization import train_tokenizer
    from gptforge.training.encoding import bytes_per_scored_token, token_byte_lengths

    texts = ["naïve café — ünïcode ✓ text, and plain words " * 3, "déjà vu: ça va? 日本語 " * 4]
    tok = train_tokenizer(texts * 5, 300)
    table = token_byte_lengths(tok)
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert int(table[ids].sum()) == len(text.encode("utf-8"))
    assert int(table[tok.eos_token_id]) == 0
    ids = tok(texts[1], add_special_tokens=False)["input_ids"][:9]
    blocks = datasets.Dataset.from_dict({"input_ids": [ids]}).with_format("torch")
    assert bytes_per_scored_token(blocks, tok) == int(table[ids[1:]].sum()) / 8


# --- runs ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recipes")


@pytest.fixture(scope="module")
def corpus(workdir) -> Path:
    folder = workdir / "corpus"
    folder.mkdir()
    lines = [f"def f_{i}(x):\n    y = x * {i} + {i % 7}\n    return y - {i % 3}\n" for i in range(90)]
    write_jsonl(folder / "train.jsonl", [{"text": line} for line in lines[:72]])
    write_jsonl(folder / "validation.jsonl", [{"text": line} for line in lines[72:]])
    return folder


@pytest.fixture(scope="module")
def tokenizer_dir(workdir, corpus) -> Path:
    out = workdir / "tok"
    assert cli.main(["train-tokenizer", "--out", str(out), "--data", str(corpus), "--vocab-size", "300"]) == 0
    return out


def run(out: Path, corpus: Path, tokenizer_dir: Path, extra_sets: tuple[str, ...] = (), **settings) -> dict:
    return pretrain.main(
        out,
        data=str(corpus),
        tokenizer=str(tokenizer_dir),
        overrides=[f"{key}={value}" for key, value in TINY.items()] + list(extra_sets),
        block_size=32,
        batch_size=4,
        eval_steps=3,
        save_steps=3,
        logging_steps=1,
        cache_dir=str(out.parent / "cache"),
        progress=False,
        **{"max_steps": 3, "max_eval_blocks": 4, **settings},
    )


def test_the_default_recipe_trains_the_adamw_half_at_its_own_rate_and_betas(workdir, corpus, tokenizer_dir):
    summary = run(workdir / "default", corpus, tokenizer_dir, learning_rate=1e-3, max_steps=10)
    saved = torch.load(Path(summary["output_dir"]) / "checkpoint-6" / "optimizer.pt", weights_only=True)
    groups = [(g["use_muon"], g["initial_lr"], g["betas"]) for g in saved["param_groups"]]
    assert groups == [
        (True, 1e-3, (0.9, 0.95)),  # Muon: its `betas` are unused, the group carries the optimizer's defaults
        (False, 3e-3, (0.8, 0.95)),  # the embeddings and the head
        (False, 3e-3, (0.9, 0.95)),  # norms
    ]
    # step 6 of 10 is in the stable phase, before the cooldown over the last 2 steps: every group at its peak
    assert [g["lr"] for g in saved["param_groups"]] == pytest.approx([1e-3, 3e-3, 3e-3])
    # in the cooldown, one schedule scales every group: the ratio holds
    cooling = torch.load(Path(summary["output_dir"]) / "checkpoint-9" / "optimizer.pt", weights_only=True)
    muon_lr, *adamw_lrs = (g["lr"] for g in cooling["param_groups"])
    assert 0 < muon_lr < 1e-3 and adamw_lrs == pytest.approx([3 * muon_lr, 3 * muon_lr])


def test_classic_is_bit_identical_to_the_default_recipe_with_every_value_set_back(workdir, corpus, tokenizer_dir):
    # `--recipe classic` is the flags' own defaults and the preset's model: the default recipe with each of its
    # training values and model switches given back explicitly trains the very same weights
    classic = run(workdir / "classic", corpus, tokenizer_dir, recipe="classic")
    defaults = pretrain.PretrainOptions(output_dir="o")
    config = GPTForgeConfig.from_preset("tiny")
    set_back = run(
        workdir / "set-back",
        corpus,
        tokenizer_dir,
        **{key: getattr(defaults, key) for key in recipes.TRAINING_KEYS},
        extra_sets=[f"{key}={json.dumps(getattr(config, key))}" for key in recipes.RECIPES["modern"]["model"]],
    )
    assert set_back["recipe"]["name"] == "modern"
    for key in ("train_loss", "eval_loss", "eval_bits_per_byte", "global_step"):
        assert set_back[key] == classic[key], key
    a, b = (load_file(Path(s["final_dir"]) / "model.safetensors") for s in (set_back, classic))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    args = json.loads((Path(classic["final_dir"]) / "training_args.json").read_text())
    assert (args["lr_scheduler_type"], args["lr_scheduler_kwargs"]) == (
        "cosine_with_min_lr",
        {"min_lr_rate": 0.1},
    )
    assert classic["recipe"]["name"] == "classic" and classic["recipe"]["explicit"] == []


def test_summary_card_and_metrics_record_the_recipe_and_bits_per_byte(workdir, corpus, tokenizer_dir):
    out = workdir / "wsd"
    summary = run(
        out,
        corpus,
        tokenizer_dir,
        recipe="classic",
        lr_schedule="warmup_stable_decay",
        optim="muon",
        max_eval_blocks=None,
    )
    final = Path(summary["final_dir"])
    published = json.loads((final / "training_summary.json").read_text())
    record = published["recipe"]
    assert record == json.loads((out / "recipe.json").read_text())
    assert record["name"] == "classic" and record["explicit"] == ["lr_schedule", "optim"]
    assert (record["optim"], record["lr_schedule"]) == ("muon", "warmup_stable_decay")
    args = json.loads((final / "training_args.json").read_text())
    assert args["lr_scheduler_type"] == "warmup_stable_decay"
    assert args["lr_scheduler_kwargs"] == {"num_decay_steps": 0.4, "decay_type": "linear", "min_lr_ratio": 0.1}
    last_eval = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    bits = last_eval[-1]["eval_bits_per_byte"]
    assert published["eval_bits_per_byte"] == bits
    # nats per token -> bits per byte, with the bytes per scored token of every validation block (packed here again)
    tok = load_tokenizer(tokenizer_dir)
    texts = [json.loads(line)["text"] for line in (corpus / "validation.jsonl").read_text().splitlines()]
    blocks = packer(tok, 32)({"text": texts})["input_ids"]
    scored = torch.tensor(blocks)[:, 1:]
    per_token = int(token_byte_lengths(tok)[scored].sum()) / scored.numel()
    assert bits == pytest.approx(last_eval[-1]["eval_loss"] / math.log(2) / per_token, rel=1e-12)
    card = model_card(final)
    assert f"Trained with {describe_recipe(record)}." in card
    assert "set explicitly: lr_schedule, optim" in card
    assert "| eval_bits_per_byte |" in card


def test_resume_continues_with_the_recorded_recipe(workdir, corpus, tokenizer_dir):
    out = workdir / "wsd"  # the run above: classic with warmup_stable_decay and muon given explicitly, 3 steps
    with pytest.raises(UsageError, match="--resume continues a run trained with the 'classic' recipe, not 'modern'"):
        run(out, corpus, tokenizer_dir, resume=True, max_steps=6, recipe="modern")
    summary = run(out, corpus, tokenizer_dir, resume=True, max_steps=6)
    assert summary["global_step"] == 6
    assert summary["recipe"]["lr_schedule"] == "warmup_stable_decay" and summary["recipe"]["optim"] == "muon"


def test_modern_recipe_trains(workdir, corpus, tokenizer_dir):
    summary = run(workdir / "modern", corpus, tokenizer_dir, recipe="modern")
    config = json.loads((Path(summary["final_dir"]) / "config.json").read_text())
    for key, value in recipes.RECIPES["modern"]["model"].items():
        assert config[key] == value, key
    assert summary["recipe"]["name"] == "modern" and math.isfinite(summary["eval_loss"])


# --- the ablation harness ------------------------------------------------------------------------------------------


def bench_argv(workdir: Path, corpus: Path, *extra: str) -> list[str]:
    sets = [f"--set={key}={value}" for key, value in TINY.items()]
    return [
        "--data", str(corpus), "--sample-by", "document", "--steps", "2", "--seeds", "1", "--batch", "2",
        "--block-size", "32", "--vocab-size", "300", "--eval-blocks", "4", "--work", str(workdir), *sets, *extra,
    ]  # fmt: skip


def test_recipe_benchmark_runs_end_to_end(workdir, corpus, capsys):
    from benchmarks import recipe as bench

    out = workdir / "bench.json"
    results = bench.main(
        bench_argv(workdir / "bench", corpus, "--skip-stdlib", "--rows", "+wsd,+qk_norm", "--json", str(out))
    )
    assert json.loads(out.read_text()) == results
    rows = {r["row"]: r for r in results}
    assert [r["row"] for r in results] == ["classic", "+wsd", "+qk_norm"]
    classic, wsd = rows["classic"], rows["+wsd"]
    assert classic["delta_vs_classic"] == 0 and classic["step_time_vs_classic"] == 1
    assert (classic["steps"], classic["tokens"], wsd["tokens"]) == (2, 2 * 2 * 32, 2 * 2 * 32)
    assert wsd["recipe"]["lr_schedule"] == "warmup_stable_decay" and wsd["recipe"]["name"] == "classic"
    assert wsd["delta_vs_classic"] == pytest.approx(wsd["bits_per_byte"] - classic["bits_per_byte"])
    printed = capsys.readouterr().out
    assert f"| {corpus} | +wsd | {wsd['bits_per_byte']:.4f} ± 0.0000 |" in printed
    assert f"seed noise ({corpus}, classic's half-range over seeds): 0.0000 bits/byte" in printed
    assert rows["+qk_norm"]["recipe"]["explicit"] == [] and math.isfinite(rows["+qk_norm"]["bits_per_byte"])


@pytest.mark.slow
def test_recipe_benchmark_every_row_on_both_corpora(workdir, corpus):
    from benchmarks import recipe as bench

    results = bench.main(bench_argv(workdir / "bench-all", corpus, "--max-files", "3"))
    assert [(r["corpus"], r["row"]) for r in results] == [
        (name, row) for name in ("stdlib", str(corpus)) for row in bench.ROWS
    ]
    for r in results:
        assert ("skipped" in r) == bool(bench.missing_fields(r["row"])), r["row"]
        if "skipped" not in r:
            assert math.isfinite(r["bits_per_byte"]) and r["steps"] == 2
