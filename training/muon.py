"""Muon for a model's hidden matrices and AdamW for the rest, as one optimizer that `Trainer` builds and checkpoints.

Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/) runs SGD with Nesterov momentum and replaces each
2D update by an approximately orthogonal matrix with the same row and column spaces, computed by a few Newton-Schulz
iterations. The modded-nanogpt speedrun and nanochat train the attention and MLP projections this way and keep AdamW
for the embeddings, the LM head, norms, biases and scalars, which is the split `muon_param_groups` makes:

- Muon: the weights of `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj` (`HIDDEN_MATRICES`);
- AdamW: everything else that trains. Weight decay on 2D and larger tensors (embeddings, the head), none on 1D
  ones (norms, biases), which is the same split as Trainer's own `get_decay_parameter_names` for gptforge models.

The orthogonalised update is scaled by 0.2 * sqrt(max(A, B)) for an A x B matrix, so that its RMS matches a typical
AdamW update (Moonshot, "Muon is Scalable for LLM Training", https://arxiv.org/abs/2502.16982): Muon then reuses
AdamW's learning rate, weight decay and schedule, and one `--learning-rate` serves both halves. Keller's original
scale (sqrt(max(1, A/B)), with a Muon learning rate near 0.02) is `adjust_lr_fn="original"`.

Three ways in (README, "Muon"):
    Trainer(model, args, optimizer_cls_and_kwargs=muon_for_trainer(args))             # args' lr, decay and betas
    Trainer(model, args, optimizer_cls_and_kwargs=(MuonFactory, {"lr": 6e-4, "weight_decay": 0.1}))
    Trainer(model, args, optimizers=(MuonWithAdamW(muon_param_groups(model, lr=6e-4)), None))
"""

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.adam import adam

# The linear layers of a gptforge block (Transformers' Llama names): the matrices Muon trains.
HIDDEN_MATRICES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The quintic's coefficients (Keller Jordan's Muon; modded-nanogpt, nanochat and torch.optim.Muon use the same).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
# floor of the Frobenius norm the iteration divides by: a zero update stays zero instead of becoming NaN
NS_EPS = 1e-7
ADJUST_LR_FNS = ("match_rms_adamw", "original")
NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def zeropower_via_newtonschulz(
    updates: Tensor, steps: int = NS_STEPS, coefficients: tuple[float, float, float] = NS_COEFFICIENTS
) -> Tensor:
    """The approximate orthogonalisation U S' V^T of each matrix U S V^T in `updates` (..., A, B), in their dtype.

    The quintic's coefficients maximise its slope at zero rather than converge, so the singular values come out
    spread over roughly [0.7, 1.2] instead of exactly 1; that does not hurt training and takes 5 steps instead of
    many more. A wide matrix is iterated as it is and a tall one transposed, so the Gram matrix X X^T is the smaller
    of the two. A batch of same-shape matrices runs as one batched matmul per product: fewer, larger kernels.
    """
    a, b, c = coefficients
    tall = updates.size(-2) > updates.size(-1)
    x = updates.mT if tall else updates
    batch_shape = x.shape[:-2]
    x = x.reshape(-1, *x.shape[-2:])  # (n, rows, cols), rows <= cols
    # the Frobenius norm bounds the spectral norm, so every singular value starts in [0, 1]
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=NS_EPS)
    for _ in range(steps):
        gram = x @ x.mT  # (n, rows, rows)
        polynomial = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b * G + c * G @ G
        x = torch.baddbmm(x, polynomial, x, beta=a)  # a * X + (b * G + c * G @ G) @ X
    x = x.reshape(*batch_shape, *x.shape[-2:])
    return x.mT if tall else x


def update_scale(shape: torch.Size | tuple[int, ...], adjust_lr_fn: str) -> float:
    """The factor on the learning rate for an A x B matrix's orthogonalised update (see the module docstring)."""
    rows, cols = shape[-2], shape[-1]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    raise ValueError(f"adjust_lr_fn must be one of {', '.join(ADJUST_LR_FNS)}, got {adjust_lr_fn!r}")


def ns_dtype_for(device: torch.device, ns_dtype: str) -> torch.dtype:
    """bfloat16 on CUDA (tensor cores, and enough for an iteration that only needs the singular values near 1),
    float32 elsewhere: CPUs without bf16 matmul units run a bf16 matmul ~18x slower than fp32."""
    if ns_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if ns_dtype not in NS_DTYPES:
        raise ValueError(f"ns_dtype must be 'auto', 'float32' or 'bfloat16', got {ns_dtype!r}")
    return NS_DTYPES[ns_dtype]


def _full(tensor: Tensor) -> Tensor:
    """The whole matrix: a DTensor (FSDP2 shard) is gathered, since orthogonalisation needs every row and column."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _like(full: Tensor, param: Tensor) -> Tensor:
    """`full` laid out as `param`: for a DTensor, this process's shard of it (a local slice, no communication)."""
    from torch.distributed.tensor import DTensor, Replicate

    if not isinstance(param, DTensor):
        return full
    mesh = param.device_mesh
    replicated = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
    return replicated.redistribute(mesh, param.placements)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on the param groups with `use_muon=True`, AdamW (`torch.optim.AdamW`'s own update) on the others.

    Every group carries `use_muon`; `muon_param_groups(model, ...)` builds them. One optimizer, not two, because
    Trainer, accelerate and the LR scheduler expect one: one `optimizer.pt`, one schedule scaling every group's lr.

    Muon groups (momentum buffer `momentum_buffer` per matrix, as `torch.optim.Muon` keeps it):
        buf = momentum * buf + (1 - momentum) * grad
        update = (1 - momentum) * grad + momentum * buf            (nesterov; else update = buf)
        p = p * (1 - lr * weight_decay) - lr * update_scale(p) * NS(update)
    AdamW groups: exactly `torch.optim.AdamW(betas, eps, weight_decay)`, state `step`, `exp_avg`, `exp_avg_sq`.

    Not `torch.optim.Muon`: it runs every Newton-Schulz iteration in bfloat16, which CPUs without bf16 matmul units
    run ~18x slower than float32, and one matrix at a time. Here the iteration runs in float32 off CUDA and bfloat16
    on it (`ns_dtype="auto"`), on a stack of all same-shape matrices at once. The arithmetic is otherwise
    `torch.optim.Muon`'s (lerp momentum, Frobenius normalisation, decoupled weight decay on the unscaled lr).

    No step reads a tensor's value on the host and none branches on one: the step is the same sequence of kernels
    whatever the gradients hold. Under FSDP2 each process gathers the full matrices (DTensors), orthogonalises them
    and keeps its own shard of the result; under DDP every process orthogonalises the same all-reduced gradients.
    """

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        *,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = NS_STEPS,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_dtype: str = "auto",
        adjust_lr_fn: str = "match_rms_adamw",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        update_scale((1, 1), adjust_lr_fn)  # validates the name
        ns_dtype_for(torch.device("cpu"), ns_dtype)
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients),
            ns_dtype=ns_dtype,
            adjust_lr_fn=adjust_lr_fn,
            betas=tuple(betas),
            eps=eps,
        )
        super().__init__(params, defaults)
        for index, group in enumerate(self.param_groups):
            if "use_muon" not in group:
                raise ValueError(
                    f"param group {index} of MuonWithAdamW has no 'use_muon': build the groups with "
                    "muon_param_groups(model, lr=...), which says which matrices Muon trains (a Trainer builds them "
                    "through MuonFactory or muon_for_trainer(args))"
                )
            if group["use_muon"]:
                flat = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
                if flat:
                    raise ValueError(f"Muon trains 2D matrices only; param group {index} holds shapes {flat}")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch only compares group sizes; an AdamW checkpoint then fails with "different number of parameter groups"
        # or, worse, loads Adam moments where momentum buffers belong
        saved = [group.get("use_muon") for group in state_dict["param_groups"]]
        if saved != [group["use_muon"] for group in self.param_groups]:
            raise ValueError(
                "this optimizer state was not saved by MuonWithAdamW with the same parameter split (its groups' "
                f"use_muon: {saved}); resume with the optimizer that wrote it (gptforge pretrain: the same --optim)"
            )
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        momentum, lr, weight_decay = group["momentum"], group["lr"], group["weight_decay"]
        # same shape, dtype and device: one batched iteration; dict order is parameter order, the same every step
        buckets: dict[tuple[Any, ...], list[Tensor]] = {}
        for p in group["params"]:
            if p.grad is not None:
                buckets.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
        for (shape, _, device), params in buckets.items():
            updates = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)
                updates.append(p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer)
            dtype = ns_dtype_for(device, group["ns_dtype"])
            stacked = torch.stack([_full(update).to(dtype) for update in updates])  # (n, A, B)
            orthogonal = zeropower_via_newtonschulz(stacked, group["ns_steps"], group["ns_coefficients"])
            step_size = lr * update_scale(shape, group["adjust_lr_fn"])
            for p, update in zip(params, orthogonal.unbind(0), strict=True):
                p.mul_(1 - lr * weight_decay)
                p.add_(_like(update.to(p.dtype), p), alpha=-step_size)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        # `torch.optim.Adam._init_group` and `step` without the options this optimizer does not offer (amsgrad,
        # maximize, capturable), so the state and the arithmetic are AdamW's own. On CPU, torch's fused kernel (one
        # vectorised pass per tensor; what Trainer's default `adamw_torch_fused` runs): torch's default there is the
        # single-tensor loop of about ten ops per tensor
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("MuonWithAdamW does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                # `step` lives on the CPU, as in torch.optim.AdamW: reading it is no device sync
                state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype(), device="cpu")
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            has_complex=any(torch.is_complex(p) for p in params),
            decoupled_weight_decay=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            fused=all(p.device.type == "cpu" for p in params) or None,
        )


def is_hidden_matrix(name: str, parameter: Tensor, hidden_matrices: Iterable[str] = HIDDEN_MATRICES) -> bool:
    """Whether a parameter is the weight of one of the block's projections, whatever prefix wraps its name.

    The test is the name's last two parts (`q_proj.weight`), so PEFT (`base_model.model.`), DDP (`module.`), FSDP1
    (`_fsdp_wrapped_module.`) and `torch.compile` (`_orig_mod.`) prefixes do not matter. A PEFT base weight is
    `q_proj.base_layer.weight` and frozen, and LoRA's factors (`q_proj.lora_A.default.weight`) go to AdamW.
    """
    parts = name.split(".")
    return parameter.ndim == 2 and len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in set(hidden_matrices)


def muon_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    *,
    muon_lr: float | None = None,
    embedding_betas: tuple[float, float] | None = None,
    hidden_matrices: Iterable[str] = HIDDEN_MATRICES,
) -> list[dict[str, Any]]:
    """The trainable parameters of `model` as `MuonWithAdamW` groups: Muon, AdamW with decay, AdamW without.

    `muon_lr` (default `lr`) is the Muon groups' learning rate; with the default `adjust_lr_fn="match_rms_adamw"`
    the shared one is the intended setting, and a higher `lr` trains the embeddings and head faster (the `modern`
    recipe's is 3x `muon_lr`). `embedding_betas` (default: the optimizer's `betas`) are the Adam betas of the 2D
    AdamW tensors, the embeddings and the head (modded-nanogpt's Adam runs (0.8, 0.95); the recipe ablation in
    benchmarks/README.md measures it here). A head tied to the input embedding is one parameter, the embedding's,
    and trains with AdamW. `ValueError` when the model has no trainable hidden matrix: Muon would train nothing.
    """
    hidden_matrices = tuple(hidden_matrices)
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    muon, decay, no_decay = [], [], []
    for name, parameter in model.named_parameters():  # each tied parameter once, under its first name
        if not parameter.requires_grad:
            continue
        if is_hidden_matrix(name, parameter, hidden_matrices) and id(parameter) not in embeddings:
            muon.append(parameter)
        elif parameter.ndim >= 2:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    if not muon:
        raise ValueError(
            f"{type(model).__name__} has no trainable 2D hidden matrix (a weight of {', '.join(hidden_matrices)}), "
            "so Muon would train nothing; train it with AdamW, or name its matrices in hidden_matrices"
        )
    groups = [
        {"params": muon, "use_muon": True, "lr": lr if muon_lr is None else muon_lr, "weight_decay": weight_decay}
    ]
    if decay:
        betas = {} if embedding_betas is None else {"betas": tuple(embedding_betas)}
        groups.append({"params": decay, "use_muon": False, "lr": lr, "weight_decay": weight_decay, **betas})
    if no_decay:
        groups.append({"params": no_decay, "use_muon": False, "lr": lr, "weight_decay": 0.0})
    return groups


class MuonFactory:
    """`Trainer(optimizer_cls_and_kwargs=(MuonFactory, kwargs))`: Transformers treats a first element that is not an
    `Optimizer` subclass as a factory, instantiates it without arguments and calls it with the model and `kwargs`
    (`Trainer.create_optimizer`), so the groups are split by parameter name, which Trainer's own groups lack.

    `kwargs`: `lr` (required), then `muon_param_groups`' `weight_decay`, `muon_lr`, `embedding_betas`,
    `hidden_matrices`, and any `MuonWithAdamW` keyword (`betas`, `eps`, `momentum`, `adjust_lr_fn`, ...).
    """

    def __call__(
        self,
        model: nn.Module,
        *,
        lr: float,
        weight_decay: float = 0.0,
        muon_lr: float | None = None,
        embedding_betas: tuple[float, float] | None = None,
        hidden_matrices: Iterable[str] = HIDDEN_MATRICES,
        **optimizer_kwargs: Any,
    ) -> MuonWithAdamW:
        groups = muon_param_groups(
            model,
            lr,
            weight_decay,
            muon_lr=muon_lr,
            embedding_betas=embedding_betas,
            hidden_matrices=hidden_matrices,
        )
        return MuonWithAdamW(groups, lr=lr, weight_decay=weight_decay, **optimizer_kwargs)


def muon_for_trainer(args: Any, **overrides: Any) -> tuple[type[MuonFactory], dict[str, Any]]:
    """`optimizer_cls_and_kwargs` for a Trainer with these `TrainingArguments`: their learning rate, weight decay,
    Adam betas and epsilon for both halves (Moonshot's scale makes the learning rate Muon's too), plus `overrides`.

    `TrainingArguments(optim=...)` cannot name Muon: Transformers converts `optim` to its closed `OptimizerNames`
    enum, and its handler table is private, so the optimizer goes to the Trainer instead.
    """
    kwargs = dict(
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    return MuonFactory, {**kwargs, **overrides}
