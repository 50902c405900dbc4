"""Timing and memory measurements. Every timed figure alternates the models inside one process (round-robin, the
starting model rotating each round) so background load hits all of them alike; figures are medians with their
spread (min-max of the measured rounds)."""

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import CompileConfig, PreTrainedModel

MATMUL_PROBE_SIZE = 2048


@dataclass
class Samples:
    """Seconds per repetition; `rate(work)` turns them into work/s figures."""

    seconds: list[float] = field(default_factory=list)

    def rate(self, work: float) -> dict[str, float]:
        rates = sorted(work / s for s in self.seconds)
        return {"median": statistics.median(rates), "min": rates[0], "max": rates[-1], "n": len(rates)}


def cpu_load() -> float:
    """Fraction of the CPUs busy over one second (the benchmark reports it; other work skews timings)."""
    return _busy(1.0)


def wait_for_idle(max_seconds: float, threshold: float = 0.15) -> None:
    """Wait (at most `max_seconds`) until the CPUs are less than `threshold` busy over half a second: on a shared
    machine this keeps rounds out of other jobs' bursts. A no-op with max_seconds=0."""
    deadline = time.perf_counter() + max_seconds
    while time.perf_counter() < deadline and _busy(0.5) > threshold:
        pass


def _busy(seconds: float) -> float:
    def read():
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return values[3] + values[4], sum(values)

    try:
        idle0, total0 = read()
        time.sleep(seconds)
        idle1, total1 = read()
    except OSError:
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side prints start/stop lines on fd 2; keep them out of the report."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_PROBE_INPUTS: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def matmul_probe_seconds(size: int = MATMUL_PROBE_SIZE) -> float:
    """Seconds of one fp32 `torch.mm` of two (size, size) matrices (2 * size**3 FLOPs): the machine's matmul peak."""
    if size not in _PROBE_INPUTS:
        _PROBE_INPUTS[size] = (torch.randn(size, size), torch.randn(size, size))
        for _ in range(2):
            torch.mm(*_PROBE_INPUTS[size])
    a, b = _PROBE_INPUTS[size]
    start = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - start


def make_optimizer(model: PreTrainedModel) -> torch.optim.Optimizer:
    """AdamW as Trainer builds it by default on torch>=2.8 (`adamw_torch_fused`)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)


def train_step(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,
    keep_grads: bool = False,
    autocast: torch.dtype | None = None,
) -> float:
    """Forward with labels, backward, AdamW step, zero_grad (set_to_none, as Trainer does, unless `keep_grads`);
    returns the loss (reading it back synchronises a GPU, so a host clock around the call times the whole step).
    `autocast` runs the forward under `torch.autocast` in that dtype, as Trainer's `bf16=True` does."""
    with torch.autocast(input_ids.device.type, dtype=autocast, enabled=autocast is not None):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=not keep_grads)
    return loss.item()


def time_training(
    models: dict[str, PreTrainedModel],
    input_ids: torch.Tensor,
    rounds: int,
    warmup: int,
    probe: bool = True,
    idle_wait: float = 0.0,
    autocast: torch.dtype | None = None,
) -> tuple[dict[str, Samples], Samples, dict[str, float], dict[str, float]]:
    """Round-robin training steps. Returns per-model step seconds, matmul-probe seconds (three per round, run between
    the models' steps so they see the same load; `probes.rate(2 * MATMUL_PROBE_SIZE**3)` is FLOP/s), each model's
    first loss (a same-function check) and first-step seconds (compilation, for compiled models)."""
    optimizers = {name: make_optimizer(model) for name, model in models.items()}
    names = list(models)
    first_loss, first_step = {}, {}
    for name in names:
        models[name].train()
        start = time.perf_counter()
        first_loss[name] = train_step(models[name], optimizers[name], input_ids, autocast=autocast)
        first_step[name] = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        for name in names:
            train_step(models[name], optimizers[name], input_ids, autocast=autocast)
    samples = {name: Samples() for name in names}
    probes = Samples()
    for r in range(rounds):
        wait_for_idle(idle_wait)
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            train_step(models[name], optimizers[name], input_ids, autocast=autocast)
            samples[name].seconds.append(time.perf_counter() - start)
        if probe:
            probes.seconds.extend(matmul_probe_seconds() for _ in range(3))
    for optimizer in optimizers.values():
        optimizer.state.clear()
    return samples, probes, first_loss, first_step


def step_peak_memory(model: PreTrainedModel, input_ids: torch.Tensor, keep_grads: bool = False) -> dict[str, float]:
    """Peak bytes allocated by torch during one training step (forward, backward, AdamW step, zero_grad), above what
    was resident before it (weights and optimizer state, which a warm-up step creates; with `keep_grads` also the
    gradients), from the profiler's allocation events; plus the resident bytes, for the total."""
    optimizer = make_optimizer(model)
    model.train()
    train_step(model, optimizer, input_ids, keep_grads)  # creates the optimizer state: resident, not part of the step
    resident = sum(t.numel() * t.element_size() for t in model.parameters())
    resident += sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if torch.is_tensor(v)
    )
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_step(model, optimizer, input_ids, keep_grads)
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    optimizer.state.clear()
    model.zero_grad(set_to_none=True)
    return {"step_peak_bytes": float(peak), "resident_bytes": float(resident)}


def generate_seconds(
    model: PreTrainedModel, prompt: torch.Tensor, new_tokens: int, cache: str, compile_config: CompileConfig | None
) -> tuple[float, torch.Tensor]:
    kwargs = {"compile_config": compile_config} if compile_config is not None else {}
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            do_sample=False,
            cache_implementation=cache,
            **kwargs,
        )
    if out.is_cuda:
        torch.cuda.synchronize(out.device)
    return time.perf_counter() - start, out


def time_decoding(
    models: dict[str, tuple[PreTrainedModel, CompileConfig | None]],
    prompt: torch.Tensor,
    new_tokens: int,
    cache: str,
    rounds: int,
    idle_wait: float = 0.0,
) -> tuple[dict[str, Samples], dict[str, float], dict[str, torch.Tensor]]:
    """Round-robin greedy `generate` calls. Returns per-model seconds, the first (warm-up) call's seconds (it
    includes compilation when compiling), and each model's tokens."""
    first, tokens = {}, {}
    for name, (model, compile_config) in models.items():
        model.eval()
        first[name], tokens[name] = generate_seconds(model, prompt, new_tokens, cache, compile_config)
    names = list(models)
    samples = {name: Samples() for name in names}
    for r in range(rounds):
        wait_for_idle(idle_wait)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            model, compile_config = models[name]
            seconds, _ = generate_seconds(model, prompt, new_tokens, cache, compile_config)
            samples[name].seconds.append(seconds)
    return samples, first, tokens
