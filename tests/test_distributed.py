"""Several processes: DDP, FSDP2, tensor parallelism, resume across world sizes and two nodes, all on CPU processes
over gloo, each matching one process with the same global batch.

`pretrain` runs 10 steps with a checkpoint at step 5: 1 process x 4 blocks (the reference, in this process) against
2 processes x 2 blocks under `torchrun` and `accelerate launch` (the DDP and the FSDP config shipped in `scripts/`).

Tolerance: per-step training and validation loss agree within 1e-5 relative, final logits within 1e-5 absolute. In
fp32 the runs differ only in how the batch is split and in the order of floating-point reductions (gradient
all-reduce or reduce-scatter against one summation); measured: within 2e-7 relative over 10 steps of a tiny model
at learning rate 1e-2. A resumed run matches its uninterrupted twin within the same bound.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from gptforge.configuration import GPTForgeConfig
from gptforge.scripts import cli, pretrain
from gptforge.tokenization import train_tokenizer
from gptforge.training import checkpointing, distributed
from gptforge.training.options import from_namespace

SCRIPTS = Path(pretrain.__file__).parent
WORKERS = Path(__file__).parent / "workers"
TINY = [
    "hidden_size=32",
    "intermediate_size=64",
    "num_hidden_layers=2",
    "num_attention_heads=4",
    "max_position_embeddings=64",
]
RTOL = 1e-5
STEPS, SAVE = 10, 5
# offline, one thread per process (the processes share the two cores)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def losses(run: Path) -> tuple[dict[int, float], dict[int, float], list[dict]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r["loss"] for r in records if "loss" in r}
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    return train, evals, records


def launch(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def assert_matches(run: Path, reference: Path, steps: range) -> None:
    got, got_eval, _ = losses(run)
    want, want_eval, _ = losses(reference)
    for step in steps:
        assert got[step] == pytest.approx(want[step], rel=RTOL), step
    for step in set(got_eval) & set(want_eval):
        assert got_eval[step] == pytest.approx(want_eval[step], rel=RTOL), step


def truncate_at(run: Path, copy: Path, step: int) -> Path:
    """A copy of a finished run as a crash after checkpoint `step` would leave it."""
    shutil.copytree(run, copy)
    for _, folder in checkpointing.list_checkpoints(copy):
        if int(folder.name.split("-")[1]) > step:
            shutil.rmtree(folder)
    shutil.rmtree(copy / "final")
    return copy


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Callable[..., list[str]]]:
    root = tmp_path_factory.mktemp("dist")
    data = root / "data"  # a folder of text files, as users have them
    data.mkdir()
    for f in range(8):
        docs = [f"def f{f}_{i}(x):\n    y = x * {(f * i) % 13}\n    return y + {i}\n" for i in range(30)]
        (data / f"part{f}.txt").write_text("\n".join(docs))
    train_tokenizer([(data / f"part{f}.txt").read_text() for f in range(8)], 300).save_pretrained(root / "tok")

    def argv(out: Path, batch_size: int, resume: bool = False) -> list[str]:
        args = ["pretrain", "--out", str(out), "--data", str(data), "--tokenizer", str(root / "tok")]
        args += [f"--set={item}" for item in TINY] + ["--sample-by", "paragraph"]
        args += ["--block-size", "32", "--batch-size", str(batch_size), "--max-steps", str(STEPS)]
        args += ["--learning-rate", "1e-2", "--warmup-steps", "1", "--eval-steps", str(SAVE)]
        args += ["--save-steps", str(SAVE), "--logging-steps", "1", "--max-eval-blocks", "8"]
        args += ["--cache-dir", str(root / "cache"), "--no-progress"] + (["--resume"] if resume else [])
        return args

    # 1 process x 4 blocks, in this process
    assert cli.main(argv(root / "single", batch_size=4)) == 0
    return root, argv


def final_logits(run: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(run / "final").eval()
    with torch.no_grad():
        return model(input_ids=torch.arange(24).reshape(2, 12) % model.config.vocab_size).logits


def accelerate(config: str) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(SCRIPTS / config)]
    return command + ["--num_processes", "2", "--main_process_port", "0", "-m", "gptforge.scripts.cli"]


TORCHRUN_2 = TORCHRUN + ["--standalone", "--nproc_per_node", "2", "-m", "gptforge.scripts.cli"]


# --------------------------------------------------------------------------------------------------------------------
# Launch checks and checkpoint rules (one process, fast)
# --------------------------------------------------------------------------------------------------------------------


def test_accelerate_cpu_flag_that_starts_one_process_is_an_error(monkeypatch):
    # what `accelerate launch --cpu --num_processes 2` leaves: its one-process launcher, with a master address
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(RuntimeError, match=r"accelerate launch --cpu started a single process .* Drop --cpu"):
        distributed.check_launch()
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun, or accelerate without --cpu
    distributed.check_launch()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("MASTER_ADDR")  # `accelerate launch --cpu` with one process
    distributed.check_launch()


def _checkpoint(folder: Path, files: list[str]) -> Path:
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    checkpointing.mark_complete(folder)
    return folder


def test_sharded_fsdp_checkpoint_verifies_and_needs_its_shards(tmp_path):
    state = ["trainer_state.json", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth", "config.json"]
    shards = ["pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp", "optimizer_0/__0_0.distcp"]
    good = _checkpoint(tmp_path / "checkpoint-5", state + shards)
    checkpointing.verify_checkpoint(good)
    assert distributed.saved_world_size(good) == 2 and distributed.is_sharded_checkpoint(good)
    no_optimizer = _checkpoint(tmp_path / "checkpoint-6", state + shards[:2])
    with pytest.raises(checkpointing.CheckpointError, match="missing optimizer.pt"):
        checkpointing.verify_checkpoint(no_optimizer)
    no_weights = _checkpoint(tmp_path / "checkpoint-7", state + shards[2:])
    with pytest.raises(checkpointing.CheckpointError, match="missing model.safetensors or"):
        checkpointing.verify_checkpoint(no_weights)
    (good / "pytorch_model_fsdp_0" / "__1_0.distcp").write_bytes(b"")  # a shard damaged after the save
    with pytest.raises(checkpointing.CheckpointError, match=r"__1_0.distcp has 0 bytes, not the 1 written"):
        checkpointing.verify_checkpoint(good)


def test_resume_with_another_world_size_is_reported_or_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    full = ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"]
    two = _checkpoint(tmp_path / "checkpoint-1", full + ["rng_state_0.pth", "rng_state_1.pth"])
    assert distributed.check_resume_world_size(two, 2) is None
    assert "written by 2 process(es) and resumes in 1" in distributed.check_resume_world_size(two, 1)
    sharded = ["pytorch_model_fsdp_0/__0_0.distcp", "optimizer_0/__0_0.distcp", "scheduler.pt", "trainer_state.json"]
    fsdp = _checkpoint(tmp_path / "checkpoint-2", sharded + ["rng_state_0.pth", "rng_state_1.pth"])
    with pytest.raises(ValueError, match="sharded FSDP checkpoint .* with 2 or more processes"):
        distributed.check_resume_world_size(fsdp, 1)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT")  # full checkpoints under FSDP: no objection
    assert distributed.check_resume_world_size(two, 2) is None
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")
    with pytest.raises(ValueError, match="holds full weights .* resume it without FSDP"):
        distributed.check_resume_world_size(two, 2)


# --------------------------------------------------------------------------------------------------------------------
# pretrain on 2 processes: DDP and FSDP2
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_accelerate_launch_with_cpu_flag_fails_instead_of_training_one_process(setup):
    root, argv = setup
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(SCRIPTS / "accelerate_fsdp.yaml"), "--num_processes", "2", "--cpu", "-m", "gptforge.scripts.cli"]
    done = subprocess.run(command + argv(root / "cpu-flag", 2), env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "accelerate launch --cpu started a single process" in done.stderr
    assert not (root / "cpu-flag" / "metrics.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate-ddp", "accelerate-fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(setup, launcher):
    root, argv = setup
    out = root / launcher
    command = {
        "torchrun": TORCHRUN_2,
        "accelerate-ddp": accelerate("accelerate_ddp.yaml"),
        "accelerate-fsdp": accelerate("accelerate_fsdp.yaml"),
    }[launcher]
    done = launch(command + argv(out, batch_size=2))
    engine = "FSDP2" if launcher.endswith("fsdp") else "DDP"
    assert f"; {engine}: 2 process(es) x 2 blocks x 1 accumulation = global batch 4" in done.stdout

    assert_matches(out, root / "single", range(1, STEPS + 1))
    train, _, records = losses(out)
    assert sorted(train) == list(range(1, STEPS + 1)) and train[STEPS] < train[1]  # it trained
    assert records[-1]["tokens"] == STEPS * 2 * 2 * 32  # step * per-device batch * processes * block size
    assert checkpointing.find_latest_checkpoint(out) == out / f"checkpoint-{STEPS}"
    middle = out / f"checkpoint-{SAVE}"
    checkpointing.verify_checkpoint(middle, world_size=2)
    if engine == "FSDP2":  # distributed checkpoint: one shard file per process, no full weights
        assert sorted(p.name for p in (middle / "pytorch_model_fsdp_0").glob("*.distcp")) == [
            "__0_0.distcp",
            "__1_0.distcp",
        ]
        assert (middle / "optimizer_0").is_dir() and not (middle / "model.safetensors").exists()
        recorded = json.loads((middle / checkpointing.MARKER).read_text())["files"]
        assert "pytorch_model_fsdp_0/__1_0.distcp" in recorded and "config.json" in recorded
    # the final folder holds the full weights, loadable in one process
    torch.testing.assert_close(final_logits(out), final_logits(root / "single"), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate-fsdp"])
def test_resume_on_two_processes_continues_the_uninterrupted_run(setup, launcher):
    root, argv = setup
    run = root / launcher
    if not run.is_dir():
        pytest.skip(f"needs test_two_processes_match_one_with_the_same_global_batch[{launcher}] first")
    resumed = truncate_at(run, root / f"{launcher}-resumed", SAVE)
    command = TORCHRUN_2 if launcher == "torchrun" else accelerate("accelerate_fsdp.yaml")
    done = launch(command + argv(resumed, batch_size=2, resume=True))
    assert f"resuming from checkpoint-{SAVE}" in done.stdout
    assert_matches(resumed, run, range(SAVE + 1, STEPS + 1))
    torch.testing.assert_close(final_logits(resumed), final_logits(run), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_resume_across_world_sizes_ddp(setup):
    root, argv = setup
    if not (root / "torchrun").is_dir():
        pytest.skip("needs test_two_processes_match_one_with_the_same_global_batch[torchrun] first")
    # 2 -> 1: a checkpoint written by two DDP processes continues in this one
    two_to_one = truncate_at(root / "torchrun", root / "two-to-one", SAVE)
    assert cli.main(argv(two_to_one, batch_size=4, resume=True)) == 0
    assert_matches(two_to_one, root / "single", range(SAVE + 1, STEPS + 1))
    # 1 -> 2: the one-process checkpoint continues on two
    one_to_two = truncate_at(root / "single", root / "one-to-two", SAVE)
    done = launch(TORCHRUN_2 + argv(one_to_two, batch_size=2, resume=True))
    assert "was written by 1 process(es) and resumes in 2" in done.stdout
    assert_matches(one_to_two, root / "single", range(SAVE + 1, STEPS + 1))


@pytest.mark.slow
def test_sharded_checkpoint_resumed_in_one_process_is_refused(setup):
    root, argv = setup
    if not (root / "accelerate-fsdp").is_dir():
        pytest.skip("needs test_two_processes_match_one_with_the_same_global_batch[accelerate-fsdp] first")
    run = truncate_at(root / "accelerate-fsdp", root / "fsdp-to-one", SAVE)
    with pytest.raises(ValueError, match="is a sharded FSDP checkpoint"):
        run_pretrain_in_process(argv(run, 4, resume=True))


def run_pretrain_in_process(args: list[str]) -> None:
    """`gptforge pretrain ARGS` in this process, letting its exceptions through (the CLI turns them into exit codes)."""
    parsed = cli.build_parser().parse_args(args)
    pretrain.main.__wrapped__(from_namespace(pretrain.main.options_type, parsed))


# --------------------------------------------------------------------------------------------------------------------
# Trainer's own fsdp arguments, the hand-written autograd paths under FSDP
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trainer_fsdp_arguments_shard_and_match_one_process(tmp_path):
    worker = [str(WORKERS / "fsdp_trainer_worker.py")]
    launch([sys.executable, *worker, str(tmp_path / "one"), "4", "10"])
    launch(TORCHRUN + ["--standalone", "--nproc_per_node", "2", *worker, str(tmp_path / "two"), "4", "10"])
    one = json.loads((tmp_path / "one" / "result_0.json").read_text())
    for rank in (0, 1):
        two = json.loads((tmp_path / "two" / f"result_{rank}.json").read_text())
        assert two["fsdp"] and two["wrapped"] == "FSDPGPTForgeForCausalLM" and two["head_weight"] == "DTensor"
        assert two["losses"] == pytest.approx(one["losses"], rel=RTOL)
        # RMSNormFunction and SiLUMul run inside the sharded blocks (each block's weights are whole there); the
        # chunked loss reads lm_head.weight directly, so under FSDP (a sharded DTensor parameter) it steps aside to
        # the plain head + loss, which the matching losses show to be the same numbers
        calls = two["calls"]
        assert calls["RMSNormFunction"] == one["calls"]["RMSNormFunction"] > 0
        assert calls["SiLUMul"] == one["calls"]["SiLUMul"] > 0
        assert one["calls"]["ChunkedLinearCrossEntropy"] == 10 and "ChunkedLinearCrossEntropy" not in calls
    full = torch.load(tmp_path / "two" / "weights.pt")
    reference = torch.load(tmp_path / "one" / "weights.pt")
    assert full.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(full[name], tensor, rtol=0, atol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------------------------------
# Tensor parallelism: from_pretrained(tp_plan="auto") on 2 CPU processes
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_tensor_parallel_matches_one_process(tmp_path, kv_heads):
    config = GPTForgeConfig.from_preset(
        "tiny", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=64, vocab_size=128,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path / "model")
    inputs = torch.randint(0, 128, (2, 12))
    torch.save(inputs, tmp_path / "model" / "inputs.pt")
    launch(TORCHRUN + ["--standalone", "--nproc_per_node", "2", str(WORKERS / "tp_worker.py")]
           + [str(tmp_path / "model"), str(tmp_path)])  # fmt: skip

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=inputs).logits
    generated = model.generate(inputs[:, :4], max_new_tokens=6, do_sample=False, pad_token_id=0)
    model.train()
    loss = model(input_ids=inputs, labels=inputs).loss
    loss.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"tp_rank{rank}.pt")
        # every projection of the plan is a DTensor split across the two processes
        assert {f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo"} <= set(got["sharded"])
        assert {f"model.layers.1.mlp.{p}_proj.weight" for p in ("gate", "up", "down")} <= set(got["sharded"])
        # fp32, the same matmuls split in two along the heads / features: measured 1e-7
        torch.testing.assert_close(got["logits"], logits, rtol=0, atol=1e-5)
        assert torch.equal(got["generated"], generated)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-6, atol=0)
        for name, param in model.named_parameters():
            torch.testing.assert_close(got["grads"][name], param.grad, rtol=0, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------------------------------
# Two nodes: two torchrun launches that meet at a c10d rendezvous
# --------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_meet_and_match_one_process(setup):
    root, argv = setup
    out = root / "two-nodes"
    node = TORCHRUN + ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d"]
    node += ["--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "gptforge-test"]
    node += ["-m", "gptforge.scripts.cli", *argv(out, batch_size=2)]
    nodes = [subprocess.Popen(node, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outputs = [p.communicate(timeout=300) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[1][-3000:] for o in outputs)
    assert any("DDP: 2 process(es) x 2 blocks" in o[0] for o in outputs)
    assert_matches(out, root / "single", range(1, STEPS + 1))
