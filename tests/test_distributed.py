"""`pretrain` across processes: 2 CPU processes (DDP over gloo) match 1 process with the same global batch.

Both launchers are covered: `torchrun` (as `python -m torch.distributed.run`) and `accelerate launch` with the DDP
config shipped in `scripts/`. The single-process run uses a per-device batch of 4, the 2-process runs 2 each.

Tolerance: per-step training loss and validation loss agree within 1e-5 relative. In fp32 the runs differ only in
how the batch is split and in the order of floating-point reductions (measured: within 1e-7).
"""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gptforge.scripts import cli, pretrain
from gptforge.tokenization import train_tokenizer
from gptforge.training.checkpointing import find_latest_checkpoint

SCRIPTS = Path(pretrain.__file__).parent
TINY = [
    "hidden_size=32",
    "intermediate_size=64",
    "num_hidden_layers=2",
    "num_attention_heads=4",
    "max_position_embeddings=64",
]
RTOL = 1e-5


def losses(run: Path) -> tuple[dict[int, float], dict[int, float], list[dict]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r["loss"] for r in records if "loss" in r}
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    return train, evals, records


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Callable[[Path, int], list[str]]]:
    root = tmp_path_factory.mktemp("dist")
    data = root / "data.jsonl"
    docs = [f"def f{i}(x):\n    y = x * {i % 13}\n    return y + {i}\n" for i in range(240)]
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    train_tokenizer(docs, 300).save_pretrained(root / "tok")

    def argv(out: Path, batch_size: int) -> list[str]:
        args = ["pretrain", "--out", str(out), "--data", str(data), "--tokenizer", str(root / "tok")]
        args += [f"--set={item}" for item in TINY]
        args += ["--block-size", "32", "--batch-size", str(batch_size), "--max-steps", "5", "--learning-rate", "1e-2"]
        args += ["--warmup-steps", "1", "--eval-steps", "5", "--save-steps", "5", "--logging-steps", "1"]
        args += ["--max-eval-blocks", "8", "--cache-dir", str(root / "cache"), "--no-progress"]
        return args

    # 1 process x 4 blocks, in this process
    assert cli.main(argv(root / "single", batch_size=4)) == 0
    return root, argv


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one_with_the_same_global_batch(setup, launcher):
    root, argv = setup
    out = root / launcher
    # 2 processes x 2 blocks; offline, one thread each (the two processes share the two cores)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        command += [str(SCRIPTS / "accelerate_ddp.yaml"), "--num_processes", "2", "--main_process_port", "0"]
    command += ["-m", "gptforge.scripts.cli", *argv(out, batch_size=2)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]

    multi_train, multi_eval, records = losses(out)
    one_train, one_eval, _ = losses(root / "single")
    assert sorted(multi_train) == sorted(one_train) == [1, 2, 3, 4, 5]
    for step in one_train:
        assert multi_train[step] == pytest.approx(one_train[step], rel=RTOL), step
    assert multi_eval[5] == pytest.approx(one_eval[5], rel=RTOL)
    assert multi_train[5] < multi_train[1]  # it trained
    assert records[-1]["tokens"] == 5 * 2 * 2 * 32  # step * per-device batch * processes * block size
    assert find_latest_checkpoint(out) == out / "checkpoint-5"
    assert (out / "final" / "model.safetensors").is_file()
