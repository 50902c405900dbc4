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
from gptforge.training import checkpointing, distributed, resharding
from gptforge.training.errors import UsageError

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
LAUNCHERS = {
    "torchrun": TORCHRUN_2,
    "accelerate-ddp": accelerate("accelerate_ddp.yaml"),
    "accelerate-fsdp": accelerate("accelerate_fsdp.yaml"),
}


@pytest.fixture(scope="module")
def two_process_run(setup) -> Callable[[str], tuple[Path, str]]:
    """The 2 processes x 2 blocks run of a launcher (its folder and output), launched when first asked for: the
    resume tests continue it, and each of them can run alone."""
    root, argv = setup
    runs: dict[str, tuple[Path, str]] = {}

    def run(launcher: str) -> tuple[Path, str]:
        if launcher not in runs:
            out = root / launcher
            shutil.rmtree(out, ignore_errors=True)  # what a failed launch left
            runs[launcher] = out, launch(LAUNCHERS[launcher] + argv(out, batch_size=2)).stdout
        return runs[launcher]

    return run


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


def test_resume_with_another_world_size_is_reported(tmp_path):
    full = ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"]
    two = _checkpoint(tmp_path / "checkpoint-1", full + ["rng_state_0.pth", "rng_state_1.pth"])
    assert distributed.check_resume_world_size(two, 2) is None
    assert "written by 2 process(es) and resumes in 1" in distributed.check_resume_world_size(two, 1)
    one = _checkpoint(tmp_path / "checkpoint-2", full + ["rng_state.pth"])
    assert "written by 1 process(es) and resumes in 2" in distributed.check_resume_world_size(one, 2)


def test_sharded_fsdp_launch_is_read_from_the_accelerate_environment(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not distributed.sharded_fsdp_launch()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT")
    assert not distributed.sharded_fsdp_launch()
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")
    assert distributed.sharded_fsdp_launch()


def _trained_checkpoint(folder: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A one-process checkpoint as Trainer writes it: weights, AdamW with two parameter groups after two steps."""
    sizes = {key: int(value) for key, value in (item.split("=") for item in TINY)}
    config = GPTForgeConfig.from_preset("tiny", **sizes, vocab_size=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    decay = [p for n, p in model.named_parameters() if n.endswith("proj.weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("proj.weight")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}])
    for _ in range(2):
        ids = torch.randint(0, 64, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    for name in ("scheduler.pt", "trainer_state.json", "rng_state.pth"):
        (folder / name).write_bytes(b"x")
    resharding.record_parameter_names(model, optimizer, folder)
    checkpointing.mark_complete(folder)
    return model, optimizer


# the conversion is one process on purpose: torch's "assuming ... a single process" warning stays out of the output
@pytest.mark.filterwarnings("error:torch.distributed is:UserWarning")
def test_checkpoint_layouts_convert_both_ways_exactly(tmp_path):
    """full -> sharded (what FSDP reads) -> full again gives back every weight and optimizer tensor bit for bit;
    the multi-process tests below resume such folders under FSDP and in one process."""
    model, optimizer = _trained_checkpoint(tmp_path / "checkpoint-2")
    sharded, note = resharding.resume_folder(tmp_path / "checkpoint-2", sharded_launch=True, output_dir=tmp_path)
    assert sharded == tmp_path / ".resume-checkpoint-2" and "rewritten as a sharded (FSDP) checkpoint" in note
    assert distributed.is_sharded_checkpoint(sharded) and not (sharded / "optimizer.pt").exists()
    checkpointing.verify_checkpoint(sharded)  # marker, sizes, shards in place of weights and optimizer
    assert resharding.resume_folder(tmp_path / "checkpoint-2", sharded_launch=False, output_dir=tmp_path)[1] is None
    written = (sharded / checkpointing.MARKER).stat().st_mtime_ns
    assert resharding.resume_folder(tmp_path / "checkpoint-2", True, tmp_path)[0] == sharded  # found, not rewritten
    assert (sharded / checkpointing.MARKER).stat().st_mtime_ns == written
    checkpointing.mark_complete(tmp_path / "checkpoint-2")  # a checkpoint of that name saved anew
    resharding.resume_folder(tmp_path / "checkpoint-2", True, tmp_path)
    assert (sharded / checkpointing.MARKER).stat().st_mtime_ns != written  # rewritten from the new one

    (tmp_path / "back").mkdir()
    shutil.copytree(sharded, tmp_path / "back" / "checkpoint-2")
    full, _ = resharding.resume_folder(tmp_path / "back" / "checkpoint-2", False, output_dir=tmp_path / "back")
    checkpointing.verify_checkpoint(full)
    reloaded = AutoModelForCausalLM.from_pretrained(full)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    want, got = optimizer.state_dict(), torch.load(full / "optimizer.pt", weights_only=True)
    assert [g["params"] for g in got["param_groups"]] == [g["params"] for g in want["param_groups"]]
    assert [g["weight_decay"] for g in got["param_groups"]] == [0.1, 0.0]
    assert want["state"].keys() == got["state"].keys()
    for index, moments in want["state"].items():
        for key, value in moments.items():
            assert torch.equal(got["state"][index][key], value), (index, key)


def test_a_checkpoint_without_parameter_names_is_refused_for_fsdp(tmp_path):
    _trained_checkpoint(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-2" / resharding.PARAMETER_NAMES).unlink()
    with pytest.raises(UsageError, match="has no optimizer_parameters.json .* resume it with the engine that wrote"):
        resharding.resume_folder(tmp_path / "checkpoint-2", sharded_launch=True, output_dir=tmp_path)
    assert not any(p.name.startswith(".resume") for p in tmp_path.iterdir())  # nothing half-written left behind


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
def test_two_processes_match_one_with_the_same_global_batch(setup, two_process_run, launcher):
    root, _ = setup
    out, stdout = two_process_run(launcher)
    engine = "FSDP2" if launcher.endswith("fsdp") else "DDP"
    assert f"; {engine}: 2 process(es) x 2 blocks x 1 accumulation = global batch 4" in stdout

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
def test_resume_on_two_processes_continues_the_uninterrupted_run(setup, two_process_run, launcher):
    root, argv = setup
    run, _ = two_process_run(launcher)
    resumed = truncate_at(run, root / f"{launcher}-resumed", SAVE)
    done = launch(LAUNCHERS[launcher] + argv(resumed, batch_size=2, resume=True))
    assert f"resuming from checkpoint-{SAVE}" in done.stdout
    assert_matches(resumed, run, range(SAVE + 1, STEPS + 1))
    torch.testing.assert_close(final_logits(resumed), final_logits(run), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate-fsdp"], ids=["ddp", "fsdp"])
def test_resume_across_world_sizes(setup, two_process_run, launcher):
    root, argv = setup
    run, _ = two_process_run(launcher)
    fsdp = launcher == "accelerate-fsdp"
    single_logits = final_logits(root / "single")
    # 2 -> 1: the checkpoint of two processes (sharded, under FSDP) continues in this one process
    two_to_one = truncate_at(run, root / f"{launcher}-to-one", SAVE)
    assert cli.main(argv(two_to_one, batch_size=4, resume=True)) == 0
    assert_matches(two_to_one, root / "single", range(SAVE + 1, STEPS + 1))
    assert not (two_to_one / f".resume-checkpoint-{SAVE}").exists()  # a rewritten copy is gone after the run
    torch.testing.assert_close(final_logits(two_to_one), single_logits, rtol=0, atol=1e-5)
    # 1 -> 2: the one-process checkpoint (full weights) continues on two processes
    one_to_two = truncate_at(root / "single", root / f"one-to-{launcher}", SAVE)
    done = launch(LAUNCHERS[launcher] + argv(one_to_two, 2, resume=True))
    assert "was written by 1 process(es) and resumes in 2" in done.stdout
    assert (f"checkpoint-{SAVE} was rewritten as a sharded (FSDP) checkpoint" in done.stdout) == fsdp
    assert_matches(one_to_two, root / "single", range(SAVE + 1, STEPS + 1))
    # the checkpoints it wrote after resuming are the engine's own: sharded under FSDP
    assert distributed.is_sharded_checkpoint(one_to_two / f"checkpoint-{STEPS}") == fsdp
    torch.testing.assert_close(final_logits(one_to_two), single_logits, rtol=0, atol=1e-5)


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


# what `srun` does with one task per node, for an allocation of SLURM_NNODES nodes on this one host
FAKE_SRUN = """#!/bin/bash
pids=()
for node in $(seq 0 $((SLURM_NNODES - 1))); do
    SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_slurm_script_runs_two_nodes_and_matches_one_process(setup, tmp_path, launcher):
    """`scripts/slurm_pretrain.sh` itself, as `sbatch` would run it on a 2-node allocation, with stand-ins for
    `srun` (one launcher per node, SLURM_NODEID set) and `scontrol` (the node list): both launcher forms meet at the
    first node and train as one 2-process run."""
    root, argv = setup
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")  # `scontrol show hostnames` -> the head
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    out = root / f"slurm-{launcher}"
    pretrain_args = " ".join(argv(out, batch_size=2)[1:])  # the script adds the `pretrain` subcommand
    env = {
        **ENV,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_CPUS_PER_TASK": "1",
        "LAUNCHER": launcher,
        "PORT": str(free_port()),
        "PRETRAIN_ARGS": pretrain_args,
        "ACCELERATE_CONFIG": str(SCRIPTS / "accelerate_fsdp.yaml"),
    }
    repository = Path(__file__).parents[1]  # the script ships in the repository, beside the package's folders
    done = subprocess.run(
        ["bash", str(repository / "scripts" / "slurm_pretrain.sh")],
        env=env, cwd=repository, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    engine = "FSDP2" if launcher == "accelerate" else "DDP"  # the script's accelerate form uses the FSDP config
    assert f"{engine}: 2 process(es) x 2 blocks" in done.stdout
    assert_matches(out, root / "single", range(1, STEPS + 1))
