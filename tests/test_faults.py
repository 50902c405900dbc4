"""Faults during `gptforge pretrain`: the real CLI in a subprocess, killed with SIGKILL mid-step and mid-checkpoint,
starved of disk (`ulimit -f`), or fed a NaN loss. Each time `--resume` continues from the last complete checkpoint,
never a partial one, and the run ends with weights bit-identical to an uninterrupted run of the same seed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gptforge.scripts import cli
from gptforge.training.checkpointing import (
    MARKER,
    CheckpointError,
    find_latest_checkpoint,
    is_complete_checkpoint,
    mark_complete,
)

DOCS = [
    f"def f_{i}(x):\n" + "".join(f"    y{j} = x * {i + j} + {j}\n" for j in range(i % 5 + 2)) + "    return x\n"
    for i in range(60)
]

# Runs `gptforge pretrain ARGV...` through `cli.main`, with a fault injected according to the environment:
#   FAULT_PAUSE_IN_STEP=N      sleep inside training step N (after writing FAULT_FLAG), so the test can kill it there
#   FAULT_PAUSE_IN_SAVE=N      sleep after writing checkpoint-N/optimizer.pt, before the checkpoint is complete
#   FAULT_FSIZE_AFTER_SAVE=N   once checkpoint-N is complete, limit files to 1 KB (`ulimit -f`): the next save fails
HARNESS = textwrap.dedent(
    """
    import os, resource, signal, sys, time
    import torch
    from gptforge.scripts import cli
    from gptforge.training import trainer

    flag = os.environ.get("FAULT_FLAG")
    if pause_step := int(os.environ.get("FAULT_PAUSE_IN_STEP", 0)):
        original_step = trainer.GPTForgeTrainer.training_step
        def paused_step(self, *args, **kwargs):
            if self.state.global_step + 1 == pause_step:
                open(flag, "w").close()
                time.sleep(120)
            return original_step(self, *args, **kwargs)
        trainer.GPTForgeTrainer.training_step = paused_step
    if pause_save := int(os.environ.get("FAULT_PAUSE_IN_SAVE", 0)):
        original_save = torch.save
        def paused_save(obj, path, *args, **kwargs):
            original_save(obj, path, *args, **kwargs)
            if str(path).endswith(f"checkpoint-{pause_save}/optimizer.pt"):
                open(flag, "w").close()
                time.sleep(120)
        torch.save = paused_save
    if limit_after := int(os.environ.get("FAULT_FSIZE_AFTER_SAVE", 0)):
        original_on_save = trainer.CompleteCheckpointCallback.on_save
        def limited_on_save(self, args, state, control, **kwargs):
            result = original_on_save(self, args, state, control, **kwargs)
            if state.global_step == limit_after:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
                resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
            return result
        trainer.CompleteCheckpointCallback.on_save = limited_on_save
    sys.exit(cli.main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:50]))
    (corpus / "validation.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[50:]))
    assert cli.main(["train-tokenizer", "--out", str(root / "tok"), "--data", str(corpus), "--vocab-size", "300"]) == 0
    reference = root / "reference"
    assert run(root, reference).returncode == 0
    return root, reference


def argv(root: Path, out: Path, *extra: str) -> list[str]:
    sizes = ["hidden_size=32", "intermediate_size=64", "num_hidden_layers=2", "num_attention_heads=4"]
    return [
        "pretrain", "--out", str(out), "--data", str(root / "corpus"), "--tokenizer", str(root / "tok"),
        *[f"--set={s}" for s in sizes], "--set=hidden_dropout=0.1",  # dropout: the RNG state must resume too
        "--block-size", "32", "--batch-size", "4", "--max-steps", "8", "--learning-rate", "1e-2",
        "--warmup-steps", "1", "--eval-steps", "100", "--save-steps", "2", "--logging-steps", "1",
        "--save-total-limit", "2", "--cache-dir", str(root / "cache"), "--no-progress", *extra,
    ]  # fmt: skip


def environment(**fault) -> dict[str, str]:
    # one thread everywhere: the same float arithmetic in every process, so weights can be compared bit for bit
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **fault}


def run(root: Path, out: Path, *extra: str, **fault: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HARNESS, *argv(root, out, *extra)],
        env=environment(**fault),
        capture_output=True,
        text=True,
        timeout=300,
    )


def kill_when_flagged(root: Path, out: Path, flag: Path, *extra: str, **fault: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", HARNESS, *argv(root, out, *extra)],
        env=environment(FAULT_FLAG=str(flag), **fault),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not flag.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the run never reached the fault"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def assert_bit_identical(run_dir: Path, reference: Path) -> None:
    got, expected = (
        load_file(run_dir / "final" / "model.safetensors"),
        load_file(reference / "final" / "model.safetensors"),
    )
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def resume(root: Path, out: Path, *extra: str) -> str:
    result = run(root, out, "--resume", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_kill_9_mid_step_resumes_from_the_last_checkpoint_bit_identically(setup, tmp_path):
    root, reference = setup
    out = tmp_path / "run"
    kill_when_flagged(root, out, tmp_path / "flag", FAULT_PAUSE_IN_STEP="5")
    assert find_latest_checkpoint(out) == out / "checkpoint-4"
    assert "resuming from checkpoint-4" in resume(root, out)
    assert_bit_identical(out, reference)


@pytest.mark.slow
def test_kill_9_mid_step_with_muon_resumes_bit_identically(setup, tmp_path):
    # Muon's momentum buffers and AdamW's moments both come back from optimizer.pt
    root, _ = setup
    reference = tmp_path / "reference"
    assert run(root, reference, "--optim", "muon").returncode == 0
    out = tmp_path / "run"
    kill_when_flagged(root, out, tmp_path / "flag", "--optim", "muon", FAULT_PAUSE_IN_STEP="5")
    assert "resuming from checkpoint-4" in resume(root, out, "--optim", "muon")
    assert_bit_identical(out, reference)


def test_kill_9_mid_checkpoint_never_picks_the_partial_one(setup, tmp_path):
    root, reference = setup
    out = tmp_path / "run"
    kill_when_flagged(root, out, tmp_path / "flag", FAULT_PAUSE_IN_SAVE="6")
    partial = out / "checkpoint-6"
    assert (partial / "optimizer.pt").is_file() and not is_complete_checkpoint(partial)  # all but the marker
    assert find_latest_checkpoint(out) == out / "checkpoint-4"
    printed = resume(root, out)
    assert "removed checkpoint-6: its save never finished" in printed and "resuming from checkpoint-4" in printed
    assert_bit_identical(out, reference)


def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_previous_one(setup, tmp_path):
    root, reference = setup
    out = tmp_path / "run"
    result = run(root, out, FAULT_FSIZE_AFTER_SAVE="4")
    assert result.returncode != 0
    assert "File too large" in result.stderr
    assert find_latest_checkpoint(out) == out / "checkpoint-4"  # complete, verified, and still the latest
    assert not (out / "final").exists()
    assert "resuming from checkpoint-4" in resume(root, out)
    assert_bit_identical(out, reference)


def test_a_checkpoint_missing_state_is_an_error_not_a_fresh_start(setup, tmp_path):
    root, reference = setup
    out = tmp_path / "run"
    kill_when_flagged(root, out, tmp_path / "flag", FAULT_PAUSE_IN_STEP="5")
    (out / "checkpoint-4" / "optimizer.pt").unlink()
    result = run(root, out, "--resume")
    assert result.returncode != 0
    assert "checkpoint-4/optimizer.pt is missing: the checkpoint was damaged after it was saved" in result.stderr


def test_verify_names_missing_state_that_was_never_saved(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    for name in ("model.safetensors", "trainer_state.json", "rng_state.pth"):
        (folder / name).write_text("x")
    mark_complete(folder)  # e.g. saved with save_only_model: no optimizer or scheduler
    with pytest.raises(CheckpointError, match=r"checkpoint-3 is missing optimizer.pt, scheduler.pt: resuming would"):
        find_latest_checkpoint(tmp_path)
    assert json.loads((folder / MARKER).read_text())["files"]["model.safetensors"] == 1


def test_a_non_finite_loss_stops_the_run_naming_step_and_checkpoint(setup, tmp_path, monkeypatch, capsys):
    root, _ = setup
    out = tmp_path / "run"
    from gptforge import GPTForgeForCausalLM

    original = GPTForgeForCausalLM.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5:  # the fifth training step
                output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(GPTForgeForCausalLM, "forward", forward)
    assert cli.main(argv(root, out)) == 1
    message = capsys.readouterr().err
    assert "the training loss is nan at step 5; stopped before the optimizer step" in message
    assert f"last good checkpoint: {out / 'checkpoint-4'}" in message
    assert find_latest_checkpoint(out) == out / "checkpoint-4"
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in state["log_history"] if "loss" in r)
