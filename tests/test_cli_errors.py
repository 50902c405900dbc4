"""What a user sees when something they passed is wrong: one `error: ...` line, exit status 2 (usage) or 1 (runtime),
no traceback unless `--debug`, and nothing written to the output folder. The error cases run the real `gptforge`
command in a subprocess; the mapping of exception types to exit statuses runs in process.

Also here: the fronts import nothing heavy (`gptforge --help` never loads torch), and `import gptforge` still
registers with the Auto classes in whichever order the user imports things.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptforge import GPTForgeConfig, GPTForgeForCausalLM, train_tokenizer
from gptforge.scripts import cli, generate, pretrain
from gptforge.training.errors import UsageError
from gptforge.training.options import from_namespace, typed_main

TINY = [
    "hidden_size=32",
    "intermediate_size=64",
    "num_hidden_layers=2",
    "num_attention_heads=4",
    "num_key_value_heads=2",
    "max_position_embeddings=64",
]
TEXTS = [f"def f_{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(60)]


def run_cli(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`gptforge ARGV...` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gptforge.scripts.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GPTFORGE_DEBUG": "", **(env or {})},
        timeout=300,
    )


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time (empty when the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *fragments: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-errors")


@pytest.fixture(scope="module")
def data(root) -> Path:
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(root) -> Path:
    folder = root / "tok"
    train_tokenizer(TEXTS, 300).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(root, tokenizer_dir) -> Path:
    """A tiny gptforge folder with its tokenizer."""
    folder = root / "model"
    fields = {key: int(value) for key, value in (item.split("=") for item in TINY)}
    config = GPTForgeConfig.from_preset("tiny", **fields, vocab_size=300)
    torch.manual_seed(0)
    GPTForgeForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def run_dir(root, data, tokenizer_dir) -> Path:
    """A pretraining run with a complete checkpoint (2 steps)."""
    out = root / "run"
    pretrain.main(
        out,
        data=str(data),
        tokenizer=str(tokenizer_dir),
        overrides=TINY,
        block_size=16,
        batch_size=2,
        max_steps=2,
        save_steps=2,
        eval_steps=2,
        max_eval_blocks=2,
        progress=False,
        cache_dir=str(root / "cache"),
    )
    return out


def pretrain_argv(out: Path, data: Path, tokenizer_dir: Path, *extra: str) -> list[str | Path]:
    return [
        "pretrain",
        "--out",
        out,
        "--data",
        data,
        "--tokenizer",
        tokenizer_dir,
        *(f"--set={item}" for item in TINY),
        "--block-size",
        "16",
        "--max-steps",
        "1",
        "--no-progress",
        *extra,
    ]


# --- each mistake, on the real command ----------------------------------------------------------------------------


def test_block_size_past_the_models_positions(root, data, tokenizer_dir):
    out = root / "block"
    argv = pretrain_argv(out, data, tokenizer_dir, "--block-size", "128")
    result = run_cli(*argv)
    assert_one_line_error(
        result, 2, "block_size=128 is larger than the model's max_position_embeddings=64", "--block-size 64"
    )
    assert not out.exists()


def test_tokenizer_folder_without_a_tokenizer(root, data, tokenizer_dir):
    empty, out = root / "not-a-tokenizer", root / "tok-missing"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    result = run_cli(*pretrain_argv(out, data, empty))
    assert_one_line_error(result, 2, f"no tokenizer at {str(empty)!r}", "tokenizer.json", "['notes.txt']")
    assert not out.exists()


def test_model_folder_that_is_neither_gptforge_gpt2_nor_llama(root, data):
    bert, out = root / "bert", root / "ft-bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    before = snapshot(bert)
    result = run_cli("finetune", "--model", bert, "--out", out, "--data", data)
    assert_one_line_error(result, 2, f"{str(bert)!r} holds a 'bert' model", "gptforge folders", "gpt2/llama")
    assert not out.exists() and snapshot(bert) == before


def test_resume_without_a_complete_checkpoint(root, data, tokenizer_dir):
    out = root / "no-checkpoint"
    (out / "checkpoint-3").mkdir(parents=True)  # a save cut short: no completion marker
    before = snapshot(out)
    result = run_cli(*pretrain_argv(out, data, tokenizer_dir, "--resume"))
    assert_one_line_error(result, 2, "--resume: no complete checkpoint", "checkpoint-3", "drop --resume")
    assert snapshot(out) == before


def test_resume_with_flags_that_contradict_the_checkpoint_names_each(root, data, tokenizer_dir, run_dir):
    out = root / "resume-conflict"
    shutil.copytree(run_dir, out)
    before = snapshot(out)
    argv = pretrain_argv(out, data, tokenizer_dir, "--resume", "--preset", "gpt2-124m", "--set", "hidden_size=64")
    result = run_cli(*argv)
    assert_one_line_error(
        result,
        2,
        "--resume continues checkpoint-2, which these flags contradict",
        "--preset gpt2-124m (hidden_size: 32 in the checkpoint, 768 asked",
        "--set hidden_size: 32 in the checkpoint, 64 asked",
    )
    assert (
        "num_hidden_layers" not in result.stderr.split("--set")[-1]
    )  # --set num_hidden_layers=2 repeats: no conflict
    assert snapshot(out) == before


def test_output_folder_that_already_holds_a_run(root, data, tokenizer_dir, run_dir):
    out = root / "taken"
    shutil.copytree(run_dir, out)
    before = snapshot(out)
    result = run_cli(*pretrain_argv(out, data, tokenizer_dir))
    assert_one_line_error(result, 2, f"{str(out)!r} already holds a run", "checkpoint-2", "--resume", "--overwrite")
    assert snapshot(out) == before


def test_generate_on_an_empty_prompt(model_dir):
    result = run_cli("generate", "--model", model_dir, "")
    assert_one_line_error(result, 2, "prompt 0 is empty ('')")


def test_a_rejected_flag_is_one_line_too():
    result = run_cli("pretrain", "--out", "x", "--no-such-flag")
    assert_one_line_error(result, 2, "unrecognized arguments: --no-such-flag", "gptforge pretrain --help")


def test_debug_shows_the_traceback(model_dir):
    for argv, env in [(("--debug", "generate"), None), (("generate", "--debug"), None), (("generate",), "1")]:
        result = run_cli(*argv, "--model", model_dir, "", env={"GPTFORGE_DEBUG": env} if env else None)
        assert result.returncode == 1  # the exception escapes: Python's own exit status
        assert "Traceback" in result.stderr and "UsageError: prompt 0 is empty" in result.stderr


# --- one shape for twin commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "export"])
@pytest.mark.parametrize(
    "argv",
    [
        ["SRC", "DST"],
        ["--source", "SRC", "--out", "DST"],
        ["SRC", "--out", "DST"],
        ["--source", "SRC", "DST"],
        ["--out", "DST", "SRC"],
        ["--source", "SRC", "--output-dir", "DST"],
    ],
)
def test_convert_and_export_take_their_folders_the_same_ways(command, argv):
    args = cli.build_parser().parse_args([command, *argv])
    options = from_namespace(args._module.main.options_type, args)
    assert (options.source, options.output_dir) == ("SRC", "DST")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["SRC"], "error: missing OUT: give it as an argument or as --out OUT"),
        (["--out", "DST"], "error: missing SOURCE: give it as an argument or as --source SOURCE"),
        (["--source", "A", "--out", "B", "C"], "error: unexpected extra argument 'C'"),
    ],
)
def test_convert_without_both_folders_is_a_usage_error(capsys, argv, message):
    assert cli.main(["convert", *argv]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_every_subcommand_that_writes_a_folder_names_it_out():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        flags = {flag for action in sub._actions for flag in action.option_strings}
        if name not in ("generate", "evaluate", "push", "serve"):  # these write no folder
            assert "--out" in flags, name


# --- exit statuses, in process ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UsageError("bad value 3; use 4"), 2),
        (ValueError("runtime\n  spread over\nlines"), 1),
        (FileNotFoundError(2, "No such file or directory", "x.txt"), 1),
        (RuntimeError("the disk is full"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exceptions_map_to_exit_statuses(monkeypatch, capsys, error, status):
    def failing(options):
        raise error

    monkeypatch.setattr(generate, "main", typed_main(generate.GenerateOptions)(failing))
    assert cli.main(["generate", "--model", "m", "p"]) == status
    err = capsys.readouterr().err
    if status == 130:
        assert err == ""
    else:
        assert err.count("\n") == 1 and err.startswith("error: ")
    if isinstance(error, ValueError) and "lines" in str(error):
        assert err == "error: runtime spread over lines\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    def failing(options):
        raise TypeError("a bug, not a user error")

    monkeypatch.setattr(generate, "main", typed_main(generate.GenerateOptions)(failing))
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["generate", "--model", "m", "p"])


# --- a command line that answers at once --------------------------------------------------------------------------

HEAVY = ("torch", "transformers", "datasets", "peft", "matplotlib", "numpy", "huggingface_hub", "tokenizers")


def test_the_fronts_import_nothing_heavy():
    """`gptforge --help`, every `SUB --help` and a rejected flag build the same parser: it must not load torch & co."""
    code = (
        "import sys\n"
        "from gptforge.scripts import cli\n"
        "cli.build_parser()\n"
        "import gptforge\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_pretrain_preset_choices_match_the_presets():
    assert pretrain.PRESET_NAMES == GPTForgeConfig.list_presets()


REGISTRATION = r"""
import sys
order = sys.argv[2]
if order == "transformers-first":
    import transformers
    import gptforge
elif order == "submodule-first":
    from gptforge.configuration import GPTForgeConfig
    import gptforge
else:
    import gptforge
    assert "torch" not in sys.modules and "transformers" not in sys.modules, "import gptforge loaded torch"
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
import peft.utils.constants as constants
print(type(model).__name__, type(tokenizer).__name__, type(AutoConfig.for_model("gptforge")).__name__,
      constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["gptforge"])
"""


@pytest.mark.parametrize("order", ["gptforge-first", "transformers-first", "submodule-first"])
def test_import_gptforge_registers_with_the_auto_classes_in_any_order(model_dir, order):
    done = subprocess.run(
        [sys.executable, "-c", REGISTRATION, str(model_dir), order],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [
        "GPTForgeForCausalLM",
        "GPTForgeTokenizer",
        "GPTForgeConfig",
        "['q_proj',",
        "'v_proj']",
    ]


def test_lazy_names_are_the_modules_own():
    import gptforge
    from gptforge.configuration import PRESETS
    from gptforge.modeling import conversion

    assert gptforge.PRESETS is PRESETS and gptforge.to_transformers is conversion.to_transformers
    assert set(gptforge.__all__) <= set(dir(gptforge))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        gptforge.nope  # noqa: B018
