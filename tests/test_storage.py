"""Saves that survive crashes: staged folders swapped in whole, carried-over files, normal permissions, failed
writes that leave the previous folder intact."""

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from _helpers import arch_config
from transformers import AutoModelForCausalLM

from gptforge import GPTForgeForCausalLM
from gptforge.storage import atomic_folder

# Saves a model (seed given) into a folder; with SLOW_SHARDS set, pauses after each written shard so the test can
# kill it with SIGKILL in the middle of the save.
SAVER = textwrap.dedent(
    """
    import os, sys, time, torch
    import transformers.modeling_utils as mu
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from _helpers import arch_config
    from gptforge import GPTForgeForCausalLM
    folder, seed = sys.argv[1], int(sys.argv[2])
    if os.environ.get("SLOW_SHARDS"):
        original = mu.safe_save_file
        def slow_save(*args, **kwargs):
            original(*args, **kwargs)
            open(os.environ["SLOW_SHARDS"], "a").write("shard\\n")
            time.sleep(30)
        mu.safe_save_file = slow_save
    torch.manual_seed(seed)
    GPTForgeForCausalLM(arch_config("llama")).save_pretrained(folder, max_shard_size="100KB")
    """
)


def run_saver(folder, seed: int, **env) -> subprocess.Popen:
    environment = {**os.environ, "TESTS_DIR": os.path.dirname(__file__), **env}
    return subprocess.Popen([sys.executable, "-c", SAVER, str(folder), str(seed)], env=environment)


def model_for_seed(seed: int) -> GPTForgeForCausalLM:
    torch.manual_seed(seed)
    return GPTForgeForCausalLM(arch_config("llama"))


def assert_same_weights(a, b) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_save_killed_halfway_leaves_the_old_folder_complete(tmp_path):
    folder = tmp_path / "model"
    assert run_saver(folder, seed=1).wait(timeout=120) == 0
    marker = tmp_path / "progress"
    saver = run_saver(folder, seed=2, SLOW_SHARDS=str(marker))
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the second save never wrote a shard"
    saver.send_signal(signal.SIGKILL)
    saver.wait(timeout=30)
    # the killed save wrote shards, but only into its hidden staging folder
    assert any(p.name.startswith(".model.saving-") for p in tmp_path.iterdir())
    assert_same_weights(AutoModelForCausalLM.from_pretrained(folder), model_for_seed(1))


def test_resave_replaces_the_weights_whole_and_keeps_other_files(tmp_path):
    folder = tmp_path / "model"
    model_for_seed(1).save_pretrained(folder, max_shard_size="50KB")
    many_shards = {p.name for p in folder.glob("model-*.safetensors")}
    (folder / "tokenizer.json").write_text("{}")
    (folder / "notes").mkdir()
    (folder / "notes" / "a.txt").write_text("kept")
    model_for_seed(2).save_pretrained(folder)  # one file now: the old shards must not linger beside it
    names = {p.name for p in folder.iterdir()}
    assert not (many_shards & names) and "model.safetensors" in names
    assert (folder / "tokenizer.json").read_text() == "{}"
    assert (folder / "notes" / "a.txt").read_text() == "kept"
    assert_same_weights(AutoModelForCausalLM.from_pretrained(folder), model_for_seed(2))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or old folder left


def test_saved_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        model_for_seed(1).save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    assert oct((tmp_path / "model").stat().st_mode & 0o777) == oct(0o755)
    for path in (tmp_path / "model").iterdir():
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path.name


@pytest.mark.parametrize("limit", [20_000, 50_000], ids=["code-file-write-fails", "weights-write-fails"])
def test_a_failing_save_raises_and_leaves_the_previous_folder(tmp_path, limit):
    folder = tmp_path / "model"
    model_for_seed(1).save_pretrained(folder)

    def limit_file_size():  # `ulimit -f`: 20 KB stops a code file, 50 KB the first weights shard
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    environment = {**os.environ, "TESTS_DIR": os.path.dirname(__file__)}
    result = subprocess.run(
        [sys.executable, "-c", SAVER, str(folder), "2"],
        env=environment,
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "File too large" in result.stderr
    assert_same_weights(AutoModelForCausalLM.from_pretrained(folder), model_for_seed(1))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_exception_inside_the_block_discards_the_staging_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "kept.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_folder(target) as staging:
        (staging / "kept.txt").write_text("new")
        raise RuntimeError("boom")
    assert (target / "kept.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
