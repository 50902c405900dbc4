"""Device-to-host reads per training step, counted exactly: on a GPU each one stalls the host until the device has
caught up, and at ~55 ms a step (gpt2-124m on an H200) a handful of stalls is a measurable share of it.

`HostReads` counts every operation that needs a tensor's values on the host (`item`, `bool`, `int`, `float`,
`tolist`, `numpy`, data-dependent shapes such as `nonzero`, copies to the CPU), keyed by the file of the first frame
outside torch that asked. The model is counted on the CPU (where a read is a plain memory load) and on the `meta`
device, which stands in for an accelerator: no values, so any read there would be a stall on a GPU. The Trainer's step
is counted on both too: on the CPU a copy to the host (`.cpu()`, `.to("cpu")`) is no copy at all, and only on `meta`
do gradient clipping, the (fused) optimizer and the scheduler run as they do on a GPU.
"""

import inspect
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.optim.optimizer as optimizer_module
from _helpers import arch_config
from datasets import Dataset
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import TrainerCallback

from gptforge import GPTForgeForCausalLM
from gptforge.training.arguments import training_arguments
from gptforge.training.encoding import causal_lm_collator
from gptforge.training.options import TrainerOptions
from gptforge.training.trainer import GPTForgeTrainer

aten = torch.ops.aten
# ops whose result needs the tensor's values (or a shape that depends on them) on the host
VALUE_OPS = {
    aten._local_scalar_dense.default,  # item(), bool(), int(), float(), `if tensor:`
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.unique_dim.default,
}
TORCH_DIR = str(Path(torch.__file__).parent)


def caller() -> str:
    """The file name of the innermost frame outside torch (the code that asked for the read)."""
    frame = sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename.startswith(TORCH_DIR)
        or frame.f_code.co_name in ("caller", "__torch_dispatch__", "__torch_function__")
    ):
        frame = frame.f_back
    return Path(frame.f_code.co_filename).name if frame is not None else "?"


class HostReads:
    """Context manager counting host reads into `self.counts` ({file name: reads}). On `meta` tensors a read answers
    `meta_value` in every element (0: each check passes; 1: what a finite loss answers `isfinite(loss).all()`), so the
    code that reads runs on and is counted instead of failing at the first read."""

    def __init__(self, meta_value: int = 0) -> None:
        self.counts: Counter[str] = Counter()
        reads = self

        class Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                source = args[0] if args and isinstance(args[0], torch.Tensor) else None
                to_host = False
                if func is aten._to_copy.default and kwargs.get("device") is not None:
                    to_host = torch.device(kwargs["device"]).type == "cpu" and source.device.type != "cpu"
                elif func is aten.copy_.default:
                    to_host = source.device.type == "cpu" and args[1].device.type != "cpu"
                elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
                    # a boolean mask as an index: the result's shape (or the written positions) need its values
                    to_host = any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])
                if func in VALUE_OPS or to_host:
                    reads.counts[caller()] += 1
                    if func is aten._local_scalar_dense.default and source.device.type == "meta":
                        return torch.full((), meta_value, dtype=source.dtype).item()
                    if func is aten._to_copy.default and source.device.type == "meta":
                        return torch.full(source.shape, meta_value, dtype=kwargs.get("dtype") or source.dtype)
                    if func is aten.copy_.default and args[1].device.type == "meta":
                        return source.fill_(meta_value)
                return func(*args, **kwargs)

        class Function(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in (torch.Tensor.tolist, torch.Tensor.numpy):
                    reads.counts[caller()] += 1
                    if args[0].device.type == "meta":
                        return torch.full(args[0].shape, meta_value, dtype=args[0].dtype).tolist()
                return func(*args, **kwargs)

        self.modes = (Function(), Dispatch())

    def __enter__(self) -> "HostReads":
        for mode in self.modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self.modes):
            mode.__exit__(*exc)


@pytest.fixture
def meta_autocast(monkeypatch):
    """`torch.is_autocast_enabled("meta")` raises (no autocast on meta); answer False, as CUDA does without autocast."""
    original = torch.is_autocast_enabled
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *a: False if a and a[0] == "meta" else original(*a))


def training_step_reads(model: torch.nn.Module, device: str) -> Counter:
    ids = torch.randint(0, model.config.vocab_size, (2, 16), device=device)
    model.train()
    with HostReads() as reads:
        model(input_ids=ids, labels=ids).loss.backward()
    return reads.counts


def test_counter_sees_each_kind_of_read():
    """The counter must see a read added anywhere, or the counts below prove nothing."""
    x = torch.arange(4.0)
    with HostReads() as reads:
        x.sum().item()
        bool(x.max() > 2)
        x.tolist()
        x.nonzero()
        x[x > 1]
        x[x > 2] = 0.0
    assert reads.counts == Counter({"test_host_syncs.py": 6})
    # on an accelerator a copy to the host is a read too (on the CPU `.cpu()` copies nothing); meta answers meta_value
    m = torch.zeros(3, device="meta")
    with HostReads(meta_value=1) as reads:
        assert m.sum().item() == 1.0 and bool(m.isfinite().all())
        assert torch.equal(m.cpu(), torch.ones(3))
        assert torch.equal(m.to("cpu", torch.long), torch.ones(3, dtype=torch.long))
        assert torch.equal(torch.zeros(3).copy_(m), torch.ones(3))
        assert m.tolist() == [1.0, 1.0, 1.0]
    assert reads.counts == Counter({"test_host_syncs.py": 6})


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_training_step_reads_nothing_on_an_accelerator(arch, meta_autocast):
    """Forward + backward with labels on a device other than the CPU: no host read at all (the token-id and position
    checks are skipped while autograd records there, the chunked loss skips its CPU-only shortcut)."""
    with torch.device("meta"):
        model = GPTForgeForCausalLM(arch_config(arch))
    assert training_step_reads(model, "meta") == Counter()


@pytest.mark.parametrize("arch, position_checks", [("llama", 0), ("gpt2", 1)])
def test_inference_on_an_accelerator_still_checks_its_inputs(arch, position_checks, meta_autocast):
    """At inference the token-id check (and, for learned positions, the position check) reads once each."""
    with torch.device("meta"):
        model = GPTForgeForCausalLM(arch_config(arch)).eval()
    ids = torch.zeros((2, 16), dtype=torch.long, device="meta")
    with torch.no_grad(), HostReads() as reads:
        model(input_ids=ids)
    assert reads.counts == Counter({"checks_gptforge.py": 1 + position_checks})


@pytest.mark.parametrize("arch, position_checks", [("llama", 0), ("gpt2", 1)])
def test_training_step_reads_on_cpu(arch, position_checks):
    """On the CPU the checks stay (a read is a memory load there): the token-id range in one read, the learned
    position range in one, and the chunked loss's check for a backward seed of exactly 1."""
    model = GPTForgeForCausalLM(arch_config(arch))
    expected = Counter({"checks_gptforge.py": 1 + position_checks, "loss_gptforge.py": 1})
    assert training_step_reads(model, "cpu") == expected


class CountStep(TrainerCallback):
    """Counts the host reads of one optimizer step (forward, backward, clipping, optimizer, scheduler)."""

    def __init__(self, step: int, meta_value: int = 0) -> None:
        self.step, self.reads = step, HostReads(meta_value)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            self.reads.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.reads.__exit__(None, None, None)


TRAINER_FILE = Path(inspect.getfile(GPTForgeTrainer)).name  # where its finite-loss guard reads


def trainer_step_reads(tmp_path: Path, device: str) -> tuple[Counter, GPTForgeTrainer]:
    """The host reads of step 2 of 3 (a step that does not log) of the Trainer the training commands build
    (`training_arguments` + `GPTForgeTrainer`), training on `device`."""
    ids = torch.randint(0, 128, (8, 16))
    options = TrainerOptions(batch_size=2, max_steps=3, logging_steps=100, progress=False, precision="fp32")
    args = training_arguments(tmp_path, options, save_strategy="no")
    meta = device == "meta"
    if meta:
        assert args.device.type == "cpu"  # set up as on this machine, then told to train on meta
        args.__dict__["_setup_devices"] = torch.device("meta")
        with torch.device("meta"):
            model = GPTForgeForCausalLM(arch_config("llama"))
    else:
        model = GPTForgeForCausalLM(arch_config("llama"))
    # meta: a read answers 1, so the guard sees a finite loss
    counter = CountStep(step=2, meta_value=int(meta))
    trainer = GPTForgeTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": ids.tolist()}),
        data_collator=causal_lm_collator,
        callbacks=[counter],
    )
    if meta:
        trainer.accelerator.device_placement = False  # accelerate would move the model to its own device, the CPU
    with HostReads(meta_value=int(meta)):  # answers the reads of the other steps and of logging on meta
        trainer.train()
    assert trainer.state.global_step == 3 and trainer.lr_scheduler.last_epoch == 3
    return counter.reads.counts, trainer


def test_trainer_step_reads_on_cpu(tmp_path):
    """On the CPU: the model's CPU-only checks, and the one read that stops a non-finite loss before the optimizer
    applies it. Transformers' own per-step NaN/Inf filter (two reads) is off: that guard already raises."""
    reads, _ = trainer_step_reads(tmp_path, "cpu")
    assert reads == Counter({"checks_gptforge.py": 1, "loss_gptforge.py": 1, TRAINER_FILE: 1})


@pytest.fixture
def meta_fused_adamw(monkeypatch):
    """Torch's fused AdamW (the Trainer's default optimizer, fused on a GPU as on the CPU) refuses `meta` parameters,
    though torch registers meta kernels for it: let it take them."""
    supported = optimizer_module._get_fused_kernels_supported_devices
    monkeypatch.setattr(optimizer_module, "_get_fused_kernels_supported_devices", lambda: [*supported(), "meta"])


def test_trainer_step_reads_once_on_an_accelerator(tmp_path, meta_autocast, meta_fused_adamw):
    """The whole step on `meta`: forward, backward, gradient clipping, the fused AdamW step, the scheduler. The model's
    checks are skipped there; the finite-loss guard's read is the one that remains."""
    reads, trainer = trainer_step_reads(tmp_path, "meta")
    assert reads == Counter({TRAINER_FILE: 1})
    # what ran on meta: the model, every optimizer state, the clipping and the fused kernel
    parameters = list(trainer.model.parameters())
    assert {p.device.type for p in parameters} == {"meta"} and trainer.args.max_grad_norm > 0
    assert trainer.optimizer.param_groups[0]["fused"] and len(trainer.optimizer.state) == len(parameters)
    assert {s["exp_avg"].device.type for s in trainer.optimizer.state.values()} == {"meta"}
