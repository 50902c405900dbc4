"""Every subcommand end to end on a small local dataset, through `gptforge.scripts.cli.main(argv)` or the typed `main`.

One tiny language model is pretrained per module (4 steps, checkpoints at 2 and 4) and shared by the tests that
need a model; the resume test reruns the same command with an interruption and compares against it.
"""

import copy
import io
import json
import math
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch
from _helpers import write_jsonl
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from gptforge import GPTForgeForCausalLM, compile_blocks
from gptforge.scripts import cli, convert, evaluate, finetune, generate, pretrain
from gptforge.scripts.cli import SUBCOMMANDS
from gptforge.scripts.streaming import TerminalStreamer
from gptforge.training import metrics, recipes
from gptforge.training.checkpointing import find_latest_checkpoint
from gptforge.training.errors import UsageError

MY_SUBCOMMANDS = ["train-tokenizer", "pretrain", "finetune", "generate", "evaluate", "convert", "demo"]
TINY = [
    "hidden_size=32",
    "intermediate_size=64",
    "num_hidden_layers=2",
    "num_attention_heads=4",
    "num_key_value_heads=2",
    "max_position_embeddings=64",
]
WORDS = ["alpha", "beta", "gamma", "delta", "value", "items", "count", "total", "index", "name"]


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        lines = [f"def {rng.choice(WORDS)}_{i}({rng.choice(WORDS)}):"]
        for _ in range(rng.randint(3, 6)):
            lines.append(f"    {rng.choice(WORDS)} = {rng.choice(WORDS)} + {rng.randint(0, 99)}")
        lines.append(f"    return {rng.choice(WORDS)}\n")
        docs.append("\n".join(lines))
    return docs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def corpus(workdir) -> Path:
    """A folder with train.jsonl and validation.jsonl of small code-like documents."""
    folder = workdir / "corpus"
    folder.mkdir()
    docs = make_docs(80)
    write_jsonl(folder / "train.jsonl", [{"text": d} for d in docs[:64]])
    write_jsonl(folder / "validation.jsonl", [{"text": d} for d in docs[64:]])
    return folder


@pytest.fixture(scope="module")
def tokenizer_dir(workdir, corpus) -> Path:
    out = workdir / "tok"
    code = cli.main(["train-tokenizer", "--out", str(out), "--data", str(corpus), "--vocab-size", "320"])
    assert code == 0
    return out


def pretrain_argv(out: Path, corpus: Path, tokenizer_dir: Path, *extra: str) -> list[str]:
    argv = ["pretrain", "--out", str(out), "--data", str(corpus), "--tokenizer", str(tokenizer_dir)]
    argv += [f"--set={item}" for item in TINY]
    argv += ["--block-size", "32", "--batch-size", "4", "--max-steps", "4", "--learning-rate", "1e-2"]
    argv += ["--warmup-steps", "1", "--eval-steps", "2", "--save-steps", "2", "--logging-steps", "1"]
    argv += ["--max-eval-blocks", "8", "--cache-dir", str(out.parent / "cache"), "--no-progress"]
    return argv + list(extra)


@pytest.fixture(scope="module")
def lm_run(workdir, corpus, tokenizer_dir) -> Path:
    out = workdir / "lm"
    assert cli.main(pretrain_argv(out, corpus, tokenizer_dir)) == 0
    return out


# --- the command line ---------------------------------------------------------------------------------------------


def test_every_subcommand_is_registered_with_help_on_every_flag(capsys):
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name in MY_SUBCOMMANDS:
        assert name in SUBCOMMANDS and name in subparsers.choices, name
        sub = subparsers.choices[name]
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
                for flag in action.option_strings:
                    assert flag == flag.lower() and "_" not in flag, f"{name}: flag {flag} is not kebab-case"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in MY_SUBCOMMANDS)


def test_train_tokenizer_folder_loads_with_auto_tokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert len(tok) == 320
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    text = "def alpha(beta):\n    return beta + 1\n"
    assert tok.decode(tok(text)["input_ids"]) == text


# --- pretrain -----------------------------------------------------------------------------------------------------


def test_pretrain_writes_final_folder_metrics_and_plot(lm_run, tokenizer_dir):
    final = lm_run / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert isinstance(model, GPTForgeForCausalLM)
    assert model.config.vocab_size == len(tok) == 320 and model.config.hidden_size == 32
    assert (model.config.eos_token_id, model.config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert sorted(p.name for p in lm_run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    records = [json.loads(line) for line in (lm_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(r["tokens"] == r["step"] * 4 * 32 for r in records)  # step * global batch * block size
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["eval_perplexity"] == pytest.approx(math.exp(r["eval_loss"])) for r in evals)
    assert train[-1]["loss"] < train[0]["loss"]
    assert (lm_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_names_every_flag_it_ignores(workdir, corpus, tokenizer_dir, lm_run, capsys):
    """Model flags that repeat the checkpoint's values are ignored with a warning naming each (contradicting ones are
    an error: tests/test_cli_errors.py)."""
    out = workdir / "resume-flags"
    shutil.copytree(lm_run, out)
    argv = pretrain_argv(out, corpus, tokenizer_dir, "--resume", "--overwrite", "--set", "num_hidden_layers=2")
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "warning: --resume continues checkpoint-4 with its own config and tokenizer; "
        "ignoring --overwrite, --set, --tokenizer\n"
    ) in printed
    resumed = GPTForgeForCausalLM.from_pretrained(out / "final")
    assert resumed.config.hidden_size == 32 and resumed.config.num_hidden_layers == 2


def test_resume_without_flags_to_ignore_prints_no_warning(workdir, corpus, tokenizer_dir, lm_run, capsys):
    out = workdir / "resume-quiet"
    shutil.copytree(lm_run, out)
    argv = [a for a in pretrain_argv(out, corpus, tokenizer_dir, "--resume") if not a.startswith("--set=")]
    tokenizer_at = argv.index("--tokenizer")
    del argv[tokenizer_at : tokenizer_at + 2]
    assert cli.main(argv) == 0
    assert "warning: --resume" not in capsys.readouterr().out


def test_resume_continues_from_saved_step_with_optimizer_and_scheduler_state(
    workdir, corpus, tokenizer_dir, lm_run, monkeypatch
):
    out = workdir / "resumed"
    argv = pretrain_argv(out, corpus, tokenizer_dir)
    metrics_callback = metrics.MetricsCallback

    class CtrlCAtStep3(metrics_callback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(metrics, "MetricsCallback", CtrlCAtStep3)  # pretrain imports it when it runs
    assert cli.main(argv) == 130  # Ctrl-C: exit code 130, checkpoint-2 left complete
    assert find_latest_checkpoint(out) == out / "checkpoint-2"
    # a half-written later checkpoint (killed mid-save) must not be picked
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "model.safetensors").write_bytes(b"partial")

    seen = {}

    class Probe(metrics_callback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["start_step"] = state.global_step
            super().on_train_begin(args, state, control, **kwargs)

        def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            if "optimizer" not in seen:
                # before the first step after resuming: what Trainer restored (copied: state_dict shares tensors)
                seen["optimizer"] = copy.deepcopy(optimizer.state_dict())
                seen["scheduler"] = copy.deepcopy(lr_scheduler.state_dict())

    monkeypatch.setattr(metrics, "MetricsCallback", Probe)
    with pytest.raises(UsageError, match=r"already holds a run \(checkpoint-2, checkpoint-3.*\); pass --resume"):
        pretrain.main.__wrapped__(cli.from_namespace(pretrain.PretrainOptions, cli.build_parser().parse_args(argv)))
    assert cli.main(argv + ["--resume"]) == 0

    assert seen["start_step"] == 2
    saved_optimizer = torch.load(out / "checkpoint-2" / "optimizer.pt", weights_only=True)
    saved_scheduler = torch.load(out / "checkpoint-2" / "scheduler.pt", weights_only=True)
    assert seen["scheduler"] == saved_scheduler and saved_scheduler["last_epoch"] == 2
    assert seen["optimizer"]["state"].keys() == saved_optimizer["state"].keys()
    # every buffer of the default recipe's optimizer (Muon's momentum, AdamW's moments and step), exactly
    assert {name for state in saved_optimizer["state"].values() for name in state} == {
        "momentum_buffer", "exp_avg", "exp_avg_sq", "step"
    }  # fmt: skip
    for key, state in saved_optimizer["state"].items():
        restored = seen["optimizer"]["state"][key]
        assert restored.keys() == state.keys()
        for name, value in state.items():
            torch.testing.assert_close(restored[name], value, rtol=0, atol=0, msg=f"{key}.{name}")
        assert "step" not in state or int(state["step"]) == 2

    # The interrupted + resumed run ends exactly where the uninterrupted one did.
    resumed, reference = (
        load_file(out / "final" / "model.safetensors"),
        load_file(lm_run / "final" / "model.safetensors"),
    )
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-5, atol=1e-6, msg=name)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) == 1  # the interrupted run's step-3 line was replaced


def test_pretrain_trains_its_own_tokenizer_and_checkpoints_activations(workdir, corpus):
    out = workdir / "own-tok"
    summary = pretrain.main(
        out,
        data=corpus,
        overrides=[*TINY, "vocab_size=300"],
        block_size=32,
        batch_size=2,
        max_steps=2,
        eval_steps=2,
        save_steps=2,
        gradient_checkpointing=True,
        cache_dir=str(workdir / "cache"),
        progress=False,
    )
    assert summary["global_step"] == 2
    assert len(AutoTokenizer.from_pretrained(out / "tokenizer")) == 300  # trained on the train split, saved
    assert AutoConfig.from_pretrained(out / "final").vocab_size == 300


def test_pretrain_compile_trains_the_same_model_with_eager_checkpoint_names(
    workdir, corpus, tokenizer_dir, lm_run, monkeypatch
):
    """`--compile` compiles the whole model in the Trainer (`torch_compile=True`): the same losses as the eager run up
    to Inductor's fused-kernel rounding, checkpoints and the final folder with the eager tensor names (no
    `_orig_mod.`), and `--resume` continues from a compiled run's checkpoint."""
    traced = []  # is_compiling() in a hook on the LM head: True only if the compiled graph reaches past the blocks
    from_config = AutoModelForCausalLM.from_config

    def spy(config, **kwargs):
        model = from_config(config, **kwargs)
        model.lm_head.register_forward_hook(lambda *_: traced.append(torch.compiler.is_compiling()))
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", spy)  # pretrain imports it when it runs
    out = workdir / "compiled"
    assert cli.main(pretrain_argv(out, corpus, tokenizer_dir, "--compile")) == 0
    assert True in traced

    def losses(run: Path) -> list[float]:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in records if "loss" in r] + [r["eval_loss"] for r in records if "eval_loss" in r]

    assert losses(out) == pytest.approx(losses(lm_run), rel=1e-4)
    eager_keys = AutoModelForCausalLM.from_pretrained(lm_run / "final").state_dict().keys()
    for folder in (out / "final", out / "checkpoint-4"):  # strict loading: every tensor name known
        assert AutoModelForCausalLM.from_pretrained(folder).state_dict().keys() == eager_keys

    # resume the compiled run for two more steps, compiled again
    argv = pretrain_argv(out, corpus, tokenizer_dir, "--compile", "--resume")
    argv[argv.index("--max-steps") + 1] = "6"
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r][-2:] == [5, 6]
    summary = json.loads((out / "final" / "training_summary.json").read_text())
    assert summary["global_step"] == 6
    assert AutoModelForCausalLM.from_pretrained(out / "checkpoint-6").state_dict().keys() == eager_keys


def test_compile_blocks_refuses_a_model_without_blocks():
    with pytest.raises(TypeError, match=r"compile_blocks needs a model .* `.layers`; Linear has none"):
        compile_blocks(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (dict(block_size=128), r"block_size=128 is larger than the model's max_position_embeddings=64"),
        (dict(text_column="body"), r"column 'body' not found in the train split of .*available columns: text"),
        (dict(overrides=[*TINY, "hiden_size=8"]), r"unknown config field\(s\) \['hiden_size'\]"),
    ],
)
def test_pretrain_bad_input_fails_before_training(workdir, corpus, tokenizer_dir, bad, match):
    out = workdir / "bad"
    settings = dict(data=corpus, tokenizer=tokenizer_dir, overrides=TINY, block_size=32, max_steps=1)
    with pytest.raises(ValueError, match=match):
        pretrain.main(out, **{**settings, **bad}, cache_dir=str(workdir / "cache"))
    assert not (out / "metrics.jsonl").exists()


def test_pretrain_missing_data_and_empty_data(workdir, tokenizer_dir):
    with pytest.raises(UsageError, match=r"no data at .*missing\.jsonl.*: no such file or folder"):
        pretrain.main(
            workdir / "bad", data=workdir / "missing.jsonl", tokenizer=tokenizer_dir, overrides=TINY, block_size=32
        )
    empty = write_jsonl(workdir / "empty.jsonl", [{"text": " "}] * 4)
    with pytest.raises(ValueError, match=r"empty after dropping rows without text in column 'text'"):
        pretrain.main(
            workdir / "bad",
            data=empty,
            tokenizer=tokenizer_dir,
            overrides=TINY,
            block_size=32,
            cache_dir=str(workdir / "cache"),
        )


# --- finetune -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(workdir) -> Path:
    """CSV with string labels: which word a snippet is mostly made of."""
    rng = random.Random(1)
    rows = ["text,label"]
    for _ in range(72):
        label = rng.choice(["alpha", "beta", "gamma"])
        words = [label] * 6 + [rng.choice(WORDS) for _ in range(3)]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    path = workdir / "labelled.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_finetune_classification_cli(workdir, lm_run, labelled):
    out = workdir / "cls"
    argv = ["finetune", "--model", str(lm_run / "final"), "--out", str(out), "--data", str(labelled)]
    argv += ["--epochs", "2", "--batch-size", "8", "--max-length", "16", "--learning-rate", "5e-3"]
    argv += ["--cache-dir", str(workdir / "cache"), "--no-progress"]
    assert cli.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["alpha", "beta", "gamma"] and results["num_classes"] == 3
    assert 0.0 <= results["accuracy"] <= 1.0 and 0.0 <= results["macro_f1"] <= 1.0
    assert 0.0 < results["majority_baseline"] < 1.0
    assert sum(map(sum, results["confusion_matrix"])) == 7  # the held-out tenth of 72 rows, rounded
    config = AutoConfig.from_pretrained(out / "final")
    assert config.id2label == {0: "alpha", 1: "beta", 2: "gamma"} and config.label2id["gamma"] == 2
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(out / "final"), torch.nn.Module)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [r for r in records if "eval_accuracy" in r]
    assert [round(r["epoch"]) for r in per_epoch] == [1, 2] and all("eval_macro_f1" in r for r in per_epoch)
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_finetune_lora_changes_only_adapters_and_merged_loads(workdir, lm_run, labelled):
    from peft import PeftModel

    out = workdir / "lora"
    results = finetune.main(
        lm_run / "final",
        out,
        data=labelled,
        lora=True,
        lora_r=4,
        epochs=1,
        batch_size=8,
        max_length=16,
        learning_rate=1e-2,
        cache_dir=str(workdir / "cache"),
        progress=False,
    )
    assert results["lora"] and Path(results["adapter_dir"]).is_dir()
    # the adapter folder pushes as written, with a PEFT model card
    from gptforge.model_card import adapter_card
    from gptforge.scripts import push

    files = {f.path for f in push.main(out / "adapter", "me/lora", dry_run=True, base_model="me/base")}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= files
    card = adapter_card(out / "adapter", "me/lora", base_model="me/base")
    assert (
        "library_name: peft" in card and "AutoModelForSequenceClassification" in card and "base_model: me/base" in card
    )
    base = load_file(lm_run / "final" / "model.safetensors")

    # The adapter applied to the untouched base: every base weight is bit-identical, the adapters have moved.
    fresh = AutoModelForSequenceClassification.from_pretrained(lm_run / "final", num_labels=3)
    peft_model = PeftModel.from_pretrained(fresh, out / "adapter")
    lora_b = []
    for name, tensor in peft_model.named_parameters():
        if "lora_B" in name:
            lora_b.append(tensor)
        elif "lora_" not in name and "score" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(tensor, base[key]), key
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: nonzero means trained

    # The merged model loads through the Auto classes and equals base + adapter.
    merged = load_file(out / "final" / "model.safetensors")
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])  # not a LoRA target
    trunk = AutoModel.from_pretrained(out / "final")
    classifier = AutoModelForSequenceClassification.from_pretrained(out / "final").eval()
    assert type(trunk).__name__ == "GPTForgeModel"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(classifier(input_ids=ids).logits, peft_model.eval()(input_ids=ids).logits)


def test_finetune_single_class_and_missing_label_column(workdir, lm_run):
    one = write_jsonl(workdir / "one.jsonl", [{"text": d, "label": "x"} for d in make_docs(10)])
    settings = dict(data=one, max_length=32, cache_dir=str(workdir / "cache"))
    with pytest.raises(ValueError, match=r"label column 'label' of .* has a single class \(\['x'\]\)"):
        finetune.main(lm_run / "final", workdir / "bad-cls", **settings)
    with pytest.raises(ValueError, match=r"column 'category' not found .*available columns: text, label"):
        finetune.main(lm_run / "final", workdir / "bad-cls", **settings, label_column="category")
    with pytest.raises(ValueError, match=r"max_length=100 is larger than the model's max_position_embeddings=64"):
        finetune.main(lm_run / "final", workdir / "bad-cls", **{**settings, "max_length": 100})
    assert not (workdir / "bad-cls" / "metrics.jsonl").exists()


# --- convert ------------------------------------------------------------------------------------------------------


def native_folder(kind: str, folder: Path, tokenizer_dir: Path) -> Path:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4, **ids))
    else:
        config = LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, **ids,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_convert_cli(workdir, tokenizer_dir, kind):
    source = native_folder(kind, workdir / f"native-{kind}", tokenizer_dir)
    out = workdir / f"converted-{kind}"
    assert cli.main(["convert", "--source", str(source), "--out", str(out)]) == 0
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    native = AutoModelForCausalLM.from_pretrained(source).eval()
    assert isinstance(converted, GPTForgeForCausalLM) and converted.config.model_type == "gptforge"
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(converted(input_ids=ids).logits, native(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert AutoTokenizer.from_pretrained(out).encode("return alpha") == AutoTokenizer.from_pretrained(source).encode(
        "return alpha"
    )


def test_convert_refuses_other_models(workdir, lm_run, capsys):
    assert cli.main(["convert", str(lm_run / "final"), str(workdir / "x")]) == 2
    assert "holds a 'gptforge' model; convert reads gpt2, llama" in capsys.readouterr().err
    with pytest.raises(UsageError, match=r"no model at .*nowhere.*config\.json"):
        convert.main(workdir / "nowhere", workdir / "x")
    assert not (workdir / "x").exists()


def test_finetune_causal_lm_from_native_gpt2_folder(workdir, corpus, tokenizer_dir):
    source = native_folder("gpt2", workdir / "native-for-ft", tokenizer_dir)
    out = workdir / "clm"
    argv = ["finetune", "--task", "causal-lm", "--model", str(source), "--out", str(out), "--data", str(corpus)]
    argv += ["--block-size", "32", "--max-steps", "3", "--batch-size", "4", "--cache-dir", str(workdir / "cache")]
    assert cli.main(argv + ["--no-progress"]) == 0
    assert AutoConfig.from_pretrained(out / "base").model_type == "gptforge"  # converted on the fly
    results = json.loads((out / "results.json").read_text())
    assert results["eval_perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    assert isinstance(AutoModelForCausalLM.from_pretrained(out / "final"), GPTForgeForCausalLM)


# --- generate -----------------------------------------------------------------------------------------------------


def test_generate_cli_batch_of_prompts(lm_run, capsys):
    argv = ["generate", "--model", str(lm_run / "final"), "--max-new-tokens", "5", "def alpha(", "    return"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "--- [0] ---\ndef alpha(" in printed and "--- [1] ---\n    return" in printed


def test_generate_streams_single_prompt_and_batches_match_one_by_one(lm_run):
    final = lm_run / "final"
    stream = io.StringIO()
    [single] = generate.main(final, ["def beta("], max_new_tokens=8, batch_size=1, out=stream)
    assert stream.getvalue() == f"--- [0] ---\ndef beta({single['completion']}\n"

    prompts = ["def beta(", "    total = count + 1\n    return", "x"]
    batched = generate.main(final, prompts, max_new_tokens=8, batch_size=3, out=io.StringIO())
    one_by_one = [generate.main(final, [p], max_new_tokens=8, out=io.StringIO())[0] for p in prompts]
    assert batched == one_by_one  # left padding changes nothing


def test_generate_stdin_sampling_and_beams(lm_run, monkeypatch):
    final = lm_run / "final"
    monkeypatch.setattr(sys, "stdin", io.StringIO("def gamma(\\n    x\n\nreturn\n"))
    results = generate.main(final, None, max_new_tokens=4, out=io.StringIO())
    assert [r["prompt"] for r in results] == ["def gamma(\n    x", "return"]

    sample = dict(sample=True, temperature=1.5, top_k=50, max_new_tokens=12, out=io.StringIO())
    first = generate.main(final, ["def"], seed=7, **sample)
    assert first == generate.main(final, ["def"], seed=7, **sample)
    beams = generate.main(final, ["def", "return"], num_beams=2, max_new_tokens=4, out=io.StringIO())
    assert len(beams) == 2


def test_terminal_streamer_live_previews_for_a_batch(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    a, b, c = (tok.encode(word)[0] for word in ("alpha", "beta", "gamma"))
    screen = io.StringIO()
    streamer = TerminalStreamer(tok, {tok.eos_token_id}, stream=screen, live=True)
    streamer.put(torch.tensor([[1, 2], [3, 4]]))  # the prompts: not part of the completions
    streamer.put(torch.tensor([a, b]))
    streamer.put(torch.tensor([tok.eos_token_id, c]))  # row 0 ends here...
    streamer.put(torch.tensor([c, a]))  # ...so its later (padding) tokens are ignored
    streamer.end()
    assert streamer.completions() == [tok.decode([a]), tok.decode([b, c, a])]
    drawn = screen.getvalue()
    assert drawn.count("\x1b[2K[0] ") == 3 and drawn.endswith("\x1b[2F\x1b[J")  # redrawn each step, then erased


# --- evaluate -----------------------------------------------------------------------------------------------------


def test_evaluate_cli_and_exact_perplexity_on_short_documents(workdir, lm_run, capsys):
    argv = ["evaluate", "--model", str(lm_run / "final"), "--data", str(workdir / "corpus")]
    argv += ["--block-size", "32", "--stride", "16", "--cache-dir", str(workdir / "cache")]
    assert cli.main(argv) == 0
    assert "validation perplexity" in capsys.readouterr().out

    # Documents that fit one window: the sliding-window figure is the plain full-sequence perplexity.
    short = write_jsonl(workdir / "short.jsonl", [{"text": f"x = {i} + {i}\n"} for i in range(12)])
    result = evaluate.main(
        lm_run / "final", data=short, split="train", block_size=64, cache_dir=str(workdir / "cache")
    )
    model = AutoModelForCausalLM.from_pretrained(lm_run / "final").eval()
    tok = AutoTokenizer.from_pretrained(lm_run / "final")
    from gptforge.training.sources import load_source

    texts = list(load_source(short, cache_dir=str(workdir / "cache"))["train"]["text"])
    nll, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([[tok.bos_token_id] + tok.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        nll += torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    assert result["tokens"] == count
    assert result["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)


# --- demo ---------------------------------------------------------------------------------------------------------


def test_demo_smoke_on_a_slice_of_the_stdlib(workdir):
    from gptforge.scripts import demo

    out = workdir / "demo"
    summary = demo.main(
        out,
        vocab_size=300,
        pretrain_steps=2,
        block_size=32,
        batch_size=4,
        overrides=TINY,
        max_new_tokens=4,
        eval_documents=2,
        classifier_epochs=1,
        classifier_train_samples=32,
        classifier_eval_samples=16,
        classifier_max_length=16,
        max_files=40,
        cache_dir=str(workdir / "cache"),
    )
    for key in ("validation_perplexity", "classifier_accuracy", "majority_baseline"):
        assert 0 < summary[key] < float("inf"), key
    assert summary["classifier_classes"] >= 8
    # the demo trains with the default recipe, and says so
    assert summary["recipe"] == recipes.DEFAULT_RECIPE == "modern"
    recorded = json.loads((out / "pretrain" / "recipe.json").read_text())
    assert recorded["name"] == "modern"
    # the demo sets the learning rate for every recipe, and leaves the warmup to the recipe
    assert recorded["explicit"] == ["learning_rate"] and recorded["warmup_steps"] == 0.02
    for artefact in ("tokenizer", "pretrain/final", "pretrain/loss.png", "pretrain/metrics.jsonl",
                     "classifier/final", "classifier/confusion.png", "generations.json", "summary.json"):  # fmt: skip
        assert (out / artefact).exists(), artefact
