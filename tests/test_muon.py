"""Muon with AdamW (`training/muon.py`): the Newton-Schulz iteration, one step against references, the parameter
split, checkpoints, Trainer and `gptforge pretrain --optim muon`, and several processes.

References: `torch.optim.Muon` (whose iteration runs in bfloat16 only: ours in bfloat16 must equal it bit for bit),
a plain float32 transcription of Keller Jordan's iteration, and `torch.optim.AdamW` for the AdamW groups.
"""

import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import arch_config, tiny_config, write_jsonl
from datasets import Dataset
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from gptforge import GPTForgeForCausalLM
from gptforge.scripts import cli, pretrain
from gptforge.training.muon import (
    NS_COEFFICIENTS,
    MuonFactory,
    MuonWithAdamW,
    muon_for_trainer,
    muon_param_groups,
    update_scale,
    zeropower_via_newtonschulz,
)
from gptforge.training.trainer import GPTForgeTrainer

ATTENTION_AND_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def reference_newton_schulz(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Keller Jordan's quintic iteration on one matrix, written out plainly, in the matrix's dtype."""
    a, b, c = NS_COEFFICIENTS
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.T if tall else matrix
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def causal_lm() -> nn.Module:
    torch.manual_seed(0)
    return GPTForgeForCausalLM(arch_config("llama"))


def give_grads(model: nn.Module, seed: int) -> None:
    model.zero_grad(set_to_none=True)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))
    model(input_ids=ids, labels=ids).loss.backward()


def names_in(model: nn.Module, groups: list[dict]) -> list[tuple[bool, float, list[str]]]:
    """(use_muon, weight_decay, parameter names) per group."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [(g["use_muon"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in groups]


# --------------------------------------------------------------------------------------------------------------------
# The Newton-Schulz iteration
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 192), (192, 64), (32, 128), (384, 128)])
def test_newton_schulz_orthogonalises_and_matches_the_reference(shape):
    matrix = torch.randn(shape)
    result = zeropower_via_newtonschulz(matrix)
    assert result.shape == matrix.shape and result.dtype == torch.float32
    torch.testing.assert_close(result, reference_newton_schulz(matrix), rtol=0, atol=2e-6)
    # The quintic leaves the singular values spread around 1, not at 1 (measured: 0.68..1.14 on Gaussian matrices
    # of aspect 3 or 4); a Gaussian matrix this rectangular has no singular value close to 0, which would stay small.
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.65 and singular.max() < 1.2, (singular.min(), singular.max())
    # and the row and column spaces are the input's: U S' V^T with U, V from the input's SVD
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    torch.testing.assert_close(u @ torch.diag(torch.diagonal(u.T @ result @ vh.T)) @ vh, result, rtol=0, atol=1e-5)


def test_newton_schulz_in_bfloat16_is_torch_optim_muons_own():
    from torch.optim._muon import _zeropower_via_newtonschulz

    for shape in [(64, 192), (192, 64)]:
        matrix = torch.randn(shape)
        ours = zeropower_via_newtonschulz(matrix.bfloat16())
        assert torch.equal(ours, _zeropower_via_newtonschulz(matrix, NS_COEFFICIENTS, 5, 1e-7))


def test_newton_schulz_batched_equals_one_matrix_at_a_time():
    stack = torch.randn(5, 48, 96)
    batched = zeropower_via_newtonschulz(stack)
    for i in range(5):
        assert torch.equal(batched[i], zeropower_via_newtonschulz(stack[i])), i
    assert torch.equal(zeropower_via_newtonschulz(torch.zeros(3, 8, 4)), torch.zeros(3, 8, 4))  # no NaN from 0/0


# --------------------------------------------------------------------------------------------------------------------
# One step against the references
# --------------------------------------------------------------------------------------------------------------------


def test_steps_equal_hand_written_muon_and_torch_adamw():
    lr, wd, momentum, betas, eps = 2e-2, 0.1, 0.95, (0.9, 0.95), 1e-8
    model = causal_lm()
    reference = copy.deepcopy(model)
    groups = muon_param_groups(model, lr=lr, weight_decay=wd)
    optimizer = MuonWithAdamW(groups, lr=lr, weight_decay=wd, momentum=momentum, betas=betas, eps=eps)
    # the reference: AdamW on the same AdamW groups; Muon by hand, one matrix at a time
    ref_groups = muon_param_groups(reference, lr=lr, weight_decay=wd)
    adamw = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "use_muon"} for g in ref_groups if not g["use_muon"]],
        betas=betas,
        eps=eps,
        fused=True,  # on CPU the AdamW groups run torch's fused kernel
    )
    matrices = ref_groups[0]["params"]
    buffers = [torch.zeros_like(p) for p in matrices]
    for step in range(3):
        give_grads(model, step)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            q.grad = p.grad.clone()  # the same gradients: each step compares the update alone
        optimizer.step()
        adamw.step()
        with torch.no_grad():
            for p, buffer in zip(matrices, buffers, strict=True):
                buffer.mul_(momentum).add_(p.grad, alpha=1 - momentum)
                update = (1 - momentum) * p.grad + momentum * buffer  # Nesterov
                scale = 0.2 * max(p.shape) ** 0.5  # Moonshot: the update's RMS of AdamW's
                p.mul_(1 - lr * wd).sub_(lr * scale * reference_newton_schulz(update))
        params = dict(reference.named_parameters())
        for name, p in model.named_parameters():
            if any(f"{proj}.weight" in name for proj in ATTENTION_AND_MLP):
                torch.testing.assert_close(p, params[name], rtol=0, atol=1e-6, msg=f"{name} at step {step}")
            else:  # AdamW: bit for bit
                assert torch.equal(p, params[name]), f"{name} at step {step}"


def test_muon_groups_in_bfloat16_step_exactly_as_torch_optim_muon():
    lr, wd = 1e-2, 0.1
    model = causal_lm()
    reference = copy.deepcopy(model)
    ours = MuonWithAdamW(muon_param_groups(model, lr=lr, weight_decay=wd), lr=lr, ns_dtype="bfloat16")
    matrices = muon_param_groups(reference, lr=lr, weight_decay=wd)[0]["params"]
    theirs = torch.optim.Muon(matrices, lr=lr, weight_decay=wd, adjust_lr_fn="match_rms_adamw")
    for step in range(3):
        give_grads(model, step)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
        for p, q in zip(ours.param_groups[0]["params"], matrices, strict=True):
            assert torch.equal(p, q), step


def test_batched_step_equals_each_matrix_stepped_alone():
    torch.manual_seed(0)
    matrices = [nn.Parameter(torch.randn(24, 40)) for _ in range(4)] + [nn.Parameter(torch.randn(40, 24))]
    alone = [nn.Parameter(p.detach().clone()) for p in matrices]
    together = MuonWithAdamW([{"params": matrices, "use_muon": True}], lr=0.1, weight_decay=0.1)
    one_each = [MuonWithAdamW([{"params": [p], "use_muon": True}], lr=0.1, weight_decay=0.1) for p in alone]
    for step in range(3):
        grads = [torch.randn(p.shape) for p in matrices]
        for p, q, g in zip(matrices, alone, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        together.step()
        for optimizer in one_each:
            optimizer.step()
        for p, q in zip(matrices, alone, strict=True):
            assert torch.equal(p, q), step


def test_a_step_reads_nothing_back_from_the_device():
    """On the `meta` device (no values: any read would be a stall on a GPU) a step of both halves runs through,
    and no operation asks for a tensor's value on the host."""
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    reads = []

    class Reads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            value_op = func in (aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default)
            to_host = func is aten._to_copy.default and str((kwargs or {}).get("device")) == "cpu"
            if (value_op or to_host) and any(t.device.type != "cpu" for t in tensors):
                reads.append(func)
            return func(*args, **(kwargs or {}))

    with torch.device("meta"):
        model = GPTForgeForCausalLM(arch_config("llama"))
    optimizer = MuonWithAdamW(muon_param_groups(model, lr=1e-2, weight_decay=0.1), lr=1e-2, weight_decay=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with Reads():
        optimizer.step()
        optimizer.step()
    assert reads == []
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["momentum_buffer"].device.type == "meta"


def test_update_scales():
    assert update_scale((128, 384), "match_rms_adamw") == pytest.approx(0.2 * 384**0.5)
    assert update_scale((384, 128), "original") == pytest.approx(3**0.5)
    assert update_scale((128, 384), "original") == 1.0
    with pytest.raises(ValueError, match=r"adjust_lr_fn must be one of match_rms_adamw, original, got 'rms'"):
        MuonWithAdamW([{"params": [nn.Parameter(torch.ones(2, 2))], "use_muon": True}], adjust_lr_fn="rms")


# --------------------------------------------------------------------------------------------------------------------
# Which parameters Muon trains
# --------------------------------------------------------------------------------------------------------------------


ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")


def per_layer(*modules: str, suffix: str = "weight") -> list[str]:
    return [f"model.layers.{i}.{module}.{suffix}" for i in range(2) for module in modules]


def test_split_of_the_tiny_preset():
    model = GPTForgeForCausalLM(tiny_config("tiny"))
    (muon, wd, matrices), (_, decayed_wd, decayed), (_, plain_wd, plain) = names_in(
        model, muon_param_groups(model, lr=1e-3, weight_decay=0.1)
    )
    assert muon and wd == decayed_wd == 0.1 and plain_wd == 0.0
    assert matrices == per_layer(*ATTENTION, "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    assert decayed == ["model.embed_tokens.weight", "lm_head.weight"]  # untied head: its own AdamW matrix
    assert plain == per_layer("input_layernorm", "post_attention_layernorm") + ["model.norm.weight"]


def test_split_of_the_gpt2_preset_with_tied_head_and_biases():
    model = GPTForgeForCausalLM(tiny_config("gpt2-124m"))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    (_, _, matrices), (_, _, decayed), (_, _, plain) = names_in(model, muon_param_groups(model, lr=1e-3))
    assert matrices == per_layer(*ATTENTION, "mlp.up_proj", "mlp.down_proj")
    # the tied head is the embedding's one parameter, trained once, by AdamW; learned positions too
    assert decayed == ["model.embed_tokens.weight", "model.embed_positions.weight"]
    norms = ("input_layernorm", "post_attention_layernorm")
    assert sorted(plain) == sorted(
        per_layer(*ATTENTION, "mlp.up_proj", "mlp.down_proj", suffix="bias")
        + per_layer(*norms)
        + per_layer(*norms, suffix="bias")
        + ["model.norm.weight", "model.norm.bias"]
    )


def test_split_ignores_wrapper_prefixes_and_frozen_weights():
    model = GPTForgeForCausalLM(tiny_config("tiny"))
    plain = names_in(model, muon_param_groups(model, lr=1e-3))
    wrapped = nn.Module()
    wrapped.base_model = nn.Module()
    wrapped.base_model.module = model  # names like PEFT's and DDP's: `base_model.module.model.layers.0...`
    prefixed = names_in(wrapped, muon_param_groups(wrapped, lr=1e-3))
    assert [(m, w, [n.removeprefix("base_model.module.") for n in names]) for m, w, names in prefixed] == plain
    model.model.layers[0].self_attn.q_proj.weight.requires_grad_(False)
    matrices = names_in(model, muon_param_groups(model, lr=1e-3))[0][2]
    assert "model.layers.0.self_attn.q_proj.weight" not in matrices and len(matrices) == 13


def test_lora_adapters_go_to_adamw_and_a_model_without_matrices_is_refused():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(GPTForgeForCausalLM(tiny_config("tiny")), peft.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"PeftModel has no trainable 2D hidden matrix \(a weight of q_proj, k_proj"):
        muon_param_groups(model, lr=1e-3)
    model.base_model.model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)  # one full matrix trains
    groups = names_in(model, muon_param_groups(model, lr=1e-3))
    assert groups[0][2] == ["base_model.model.model.layers.0.mlp.up_proj.weight"]
    assert all("lora_" in name for name in groups[1][2])  # the adapters' factors, with AdamW
    with pytest.raises(ValueError, match=r"Sequential has no trainable 2D hidden matrix"):
        muon_param_groups(nn.Sequential(nn.Embedding(8, 4), nn.Linear(4, 8)), lr=1e-3)


def test_groups_without_use_muon_are_refused_with_the_way_to_build_them():
    with pytest.raises(ValueError, match=r"param group 0 of MuonWithAdamW has no 'use_muon': build the groups with"):
        MuonWithAdamW([nn.Parameter(torch.ones(2, 2))])
    with pytest.raises(ValueError, match=r"Muon trains 2D matrices only; param group 0 holds shapes \[\(3,\)\]"):
        MuonWithAdamW([{"params": [nn.Parameter(torch.ones(3))], "use_muon": True}])


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints: the optimizer's state round-trips exactly
# --------------------------------------------------------------------------------------------------------------------


def test_state_dict_round_trip_continues_exactly():
    def optimizer_for(model):
        return MuonWithAdamW(muon_param_groups(model, lr=1e-2, weight_decay=0.1), lr=1e-2, weight_decay=0.1)

    model = causal_lm()
    optimizer = optimizer_for(model)
    for step in range(2):
        give_grads(model, step)
        optimizer.step()
    saved_weights = copy.deepcopy(model.state_dict())
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)  # as Trainer writes optimizer.pt, and reads it back (weights_only)
    for step in range(2, 5):  # the uninterrupted run
        give_grads(model, step)
        optimizer.step()

    resumed = GPTForgeForCausalLM(arch_config("llama"))
    resumed.load_state_dict(saved_weights)
    fresh = optimizer_for(resumed)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    for step in range(2, 5):
        give_grads(resumed, step)
        fresh.step()
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name


# --------------------------------------------------------------------------------------------------------------------
# Trainer: optimizer_cls_and_kwargs, GPTForgeTrainer, checkpoint and resume
# --------------------------------------------------------------------------------------------------------------------


def lm_dataset() -> Dataset:
    ids = torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def trainer_args(out: Path, steps: int = 8, **settings) -> TrainingArguments:
    defaults = dict(
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        weight_decay=0.1,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(output_dir=str(out), max_steps=steps, **{**defaults, **settings})


def train_losses(trainer: Trainer) -> list[float]:
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


@pytest.mark.parametrize("trainer_class", [Trainer, GPTForgeTrainer])
def test_trainer_with_optimizer_cls_and_kwargs_trains(tmp_path, trainer_class):
    torch.manual_seed(0)
    model = GPTForgeForCausalLM(arch_config("llama"))
    args = trainer_args(tmp_path)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=lm_dataset(),
        optimizer_cls_and_kwargs=(MuonFactory, {"lr": args.learning_rate, "weight_decay": 0.1, "betas": (0.9, 0.95)}),
    )
    losses = train_losses(trainer)
    optimizer = trainer.optimizer.optimizer  # accelerate's wrapper around ours
    assert isinstance(optimizer, MuonWithAdamW) and [g["use_muon"] for g in optimizer.param_groups] == [
        True,
        False,
        False,
    ]
    assert all("momentum_buffer" in optimizer.state[p] for p in optimizer.param_groups[0]["params"])
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]


def test_trainer_refuses_muon_with_trainers_own_groups(tmp_path):
    args = trainer_args(tmp_path)
    trainer = Trainer(
        model=GPTForgeForCausalLM(arch_config("llama")),
        args=args,
        train_dataset=lm_dataset(),
        optimizer_cls_and_kwargs=(MuonWithAdamW, {"lr": 1e-2}),
    )
    with pytest.raises(ValueError, match=r"no 'use_muon': build the groups with muon_param_groups\(model, lr=...\)"):
        trainer.train()


def test_trainer_checkpoint_resumes_bit_identically(tmp_path):
    def run(out: Path, resume: str | None = None) -> GPTForgeTrainer:
        torch.manual_seed(0)
        args = trainer_args(out, steps=6, save_strategy="steps", save_steps=3)
        trainer = GPTForgeTrainer(
            model=GPTForgeForCausalLM(arch_config("llama", hidden_dropout=0.1)),  # the RNG state resumes too
            args=args,
            train_dataset=lm_dataset(),
            optimizer_cls_and_kwargs=muon_for_trainer(args),
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    uninterrupted = run(tmp_path / "whole")
    saved = torch.load(tmp_path / "whole" / "checkpoint-3" / "optimizer.pt", weights_only=True)
    assert [g["use_muon"] for g in saved["param_groups"]] == [True, False, False]
    assert set(saved["state"][0]) == {"momentum_buffer"} and set(saved["state"][14]) == {
        "step",
        "exp_avg",
        "exp_avg_sq",
    }
    resumed = run(tmp_path / "whole", resume=str(tmp_path / "whole" / "checkpoint-3"))
    for (name, p), q in zip(uninterrupted.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_resuming_an_adamw_checkpoint_with_muon_names_the_mismatch(tmp_path):
    args = trainer_args(tmp_path, steps=2, save_strategy="steps", save_steps=2)
    GPTForgeTrainer(model=GPTForgeForCausalLM(arch_config("llama")), args=args, train_dataset=lm_dataset()).train()
    trainer = GPTForgeTrainer(
        model=GPTForgeForCausalLM(arch_config("llama")),
        args=trainer_args(tmp_path, steps=4),
        train_dataset=lm_dataset(),
        optimizer_cls_and_kwargs=muon_for_trainer(args),
    )
    with pytest.raises(ValueError, match=r"not saved by MuonWithAdamW .*use_muon: \[None, None\]\); resume with the"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


# --------------------------------------------------------------------------------------------------------------------
# gptforge pretrain --optim muon
# --------------------------------------------------------------------------------------------------------------------

TINY = ["hidden_size=32", "intermediate_size=64", "num_hidden_layers=2", "num_attention_heads=4"]
DOCS = [
    f"def f_{i}(x):\n" + "".join(f"    y{j} = x * {i + j} + {j}\n" for j in range(i % 5 + 2)) + "    return x\n"
    for i in range(60)
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("muon")
    (root / "corpus").mkdir()
    write_jsonl(root / "corpus" / "train.jsonl", [{"text": d} for d in DOCS[:50]])
    write_jsonl(root / "corpus" / "validation.jsonl", [{"text": d} for d in DOCS[50:]])
    assert (
        cli.main(
            ["train-tokenizer", "--out", str(root / "tok"), "--data", str(root / "corpus"), "--vocab-size", "300"]
        )
        == 0
    )
    return root


def pretrain_argv(root: Path, out: Path, *extra: str, batch_size: int = 4) -> list[str]:
    return [
        "pretrain", "--out", str(out), "--data", str(root / "corpus"), "--tokenizer", str(root / "tok"),
        *[f"--set={s}" for s in TINY], "--block-size", "32", "--batch-size", str(batch_size), "--max-steps", "8",
        "--learning-rate", "1e-2", "--warmup-steps", "1", "--eval-steps", "4", "--save-steps", "4",
        "--logging-steps", "1", "--max-eval-blocks", "8", "--cache-dir", str(root / "cache"), "--no-progress",
        "--recipe", "classic", *extra,  # Muon on its own: the preset's model, classic's schedule
    ]  # fmt: skip


def losses_of(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.fixture(scope="module")
def muon_run(corpus) -> Path:
    """`--optim muon` in this process: 8 steps of 4 blocks, checkpoints at 4 and 8."""
    out = corpus / "muon"
    assert cli.main(pretrain_argv(corpus, out, "--optim", "muon")) == 0
    return out


def test_pretrain_optim_muon_trains_end_to_end(corpus, muon_run):
    out = muon_run
    losses = losses_of(out)
    assert sorted(losses) == list(range(1, 9)) and losses[8] < losses[1]
    saved = torch.load(out / "checkpoint-8" / "optimizer.pt", weights_only=True)
    assert [g["use_muon"] for g in saved["param_groups"]] == [True, False, False]
    assert all(g["lr"] == saved["param_groups"][0]["lr"] for g in saved["param_groups"])  # one schedule for both
    assert AutoModelForCausalLM.from_pretrained(out / "final").config.hidden_size == 32
    # classic's optimizer is AdamW, and the two optimizers train differently
    adamw = corpus / "adamw"
    assert cli.main(pretrain_argv(corpus, adamw)) == 0
    assert "use_muon" not in torch.load(adamw / "checkpoint-8" / "optimizer.pt", weights_only=True)["param_groups"][0]
    assert losses_of(adamw)[1] == losses[1] and losses_of(adamw)[8] != losses[8]


def test_pretrain_optim_rejects_an_unknown_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["pretrain", "--out", "unused", "--optim", "lion"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err  # one line; newer Pythons print the choices without quotes
    assert re.fullmatch(
        r"error: argument --optim: invalid choice: 'lion' \(choose from '?adamw'?, '?muon'?\) .*\n", error
    )


# --------------------------------------------------------------------------------------------------------------------
# Several processes: DDP and FSDP2 on CPU processes over gloo, against the one-process run with the same global batch
# --------------------------------------------------------------------------------------------------------------------

# offline, one thread per process (the processes share the two cores)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SCRIPTS = Path(pretrain.__file__).parent
LAUNCHERS = {
    "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "fsdp": [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(SCRIPTS / "accelerate_fsdp.yaml"),
    ]
    + ["--num_processes", "2", "--main_process_port", "0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_processes_match_one(corpus, muon_run, engine):
    # Every process orthogonalises the same whole matrices: under DDP the all-reduced gradients, under FSDP2 the
    # gathered shards of them, so two processes of 2 blocks follow one of 4 up to the order of float reductions
    # (tolerance as tests/test_distributed.py: 1e-5 relative on every step's loss).
    out = corpus / engine
    command = [
        *LAUNCHERS[engine],
        "-m",
        "gptforge.scripts.cli",
        *pretrain_argv(corpus, out, "--optim", "muon", batch_size=2),
    ]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert f"{'FSDP2' if engine == 'fsdp' else 'DDP'}: 2 process(es) x 2 blocks" in done.stdout
    got, want = losses_of(out), losses_of(muon_run)
    assert sorted(got) == list(range(1, 9))
    for step in got:
        assert got[step] == pytest.approx(want[step], rel=1e-5), step
    final, reference = (
        load_file(out / "final" / "model.safetensors"),
        load_file(muon_run / "final" / "model.safetensors"),
    )
    for name, tensor in reference.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_under_fsdp_and_in_one_process(corpus, muon_run):
    # the sharded optimizer state (momentum buffers as distributed-checkpoint shards, keyed by parameter name)
    # continues the run under FSDP, and rewritten as a full optimizer.pt (training/resharding.py) in one process
    run = corpus / "fsdp"
    if not run.is_dir():
        pytest.skip("needs test_two_processes_match_one[fsdp] first")
    for name, command, batch_size in [("fsdp-resumed", LAUNCHERS["fsdp"], 2), ("fsdp-to-one", None, 4)]:
        resumed = corpus / name
        shutil.copytree(run, resumed)
        shutil.rmtree(resumed / "checkpoint-8")
        shutil.rmtree(resumed / "final")
        argv = pretrain_argv(corpus, resumed, "--optim", "muon", "--resume", batch_size=batch_size)
        if command is None:
            assert cli.main(argv) == 0
        else:
            done = subprocess.run(
                [*command, "-m", "gptforge.scripts.cli", *argv], env=ENV, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
            assert "resuming from checkpoint-4" in done.stdout
        got, want = losses_of(resumed), losses_of(muon_run)
        for step in range(5, 9):
            assert got[step] == pytest.approx(want[step], rel=1e-5), (name, step)
