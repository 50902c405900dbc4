"""The chunked LM-head loss: `ChunkedLinearCrossEntropy` computes the causal-LM cross-entropy and its gradients in
row chunks, so the full (tokens, vocab) logits never exist; `chunked_causal_lm_loss` is the drop-in for Transformers'
`ForCausalLMLoss` that `GPTForgeForCausalLM` calls while training with `labels`.

Separate from the modeling file because it is a self-contained autograd function with its own tuning constants, not
part of the model's structure; the flat remote-code copy (gptforge/remote_code.py) ships it as a sibling file,
`loss_gptforge.py`.
"""

import torch
from torch import nn

# Rows per chunk of the chunked LM-head loss: about LOSS_CHUNK_ELEMENTS fp32 logits (16 MiB) per chunk on CPU, so the
# full (tokens, vocab) logits never exist, but at least LOSS_CHUNK_MIN_ROWS rows, because each chunk also reads and
# writes the whole (vocab, hidden) weight gradient and thin matmuls are slow (measured on CPU: at vocab 50257, 83-row
# chunks cost 9% of a training step, 128-row chunks nothing; at vocab 8192, 512-row chunks beat 256 and 1024). A GPU
# needs far bigger chunks to fill its matrix units and amortise ~15 kernel launches per chunk (measured on an H200 at
# gpt2-124m, 16x1024 tokens: 128-row chunks made the eager step 0.80x Llama's), so there a chunk holds up to 2**28
# logits (1 GiB in fp32): still a fraction of the plain path's bf16 logits + fp32 copy + gradient.
LOSS_CHUNK_ELEMENTS = 2**22
LOSS_CHUNK_ELEMENTS_ACCELERATOR = 2**28
LOSS_CHUNK_MIN_ROWS = 128


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """`cross_entropy(hidden @ weight.T, targets, reduction="sum") / divisor`, without ever holding the full logits;
    with `softcap`, of `softcap * tanh(hidden @ weight.T / softcap)` (Gemma 2's final-logit softcapping).

    Rows go `chunk_rows` at a time: each chunk's logits are projected, reduced to its share of the loss and turned
    straight into its share of both gradients (softmax minus one-hot, divided by `divisor`), so forward already knows
    the gradients and backward only scales them. Peak memory holds one (chunk_rows, vocab) block instead of the
    (tokens, vocab) logits, their log-softmax and their gradient; the matmul FLOPs are the plain path's. Logits are
    reduced in fp32 whatever the weight dtype, as Transformers' `ForCausalLMLoss` does.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, divisor, ignore_index, chunk_rows, softcap=None):
        # hidden (N, d), weight (V, d), targets (N,) already shifted, divisor a 0-dim tensor
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        hidden_dtype, weight_dtype = hidden.dtype, weight.dtype  # the gradients go back in these dtypes
        device = hidden.device.type
        if torch.is_autocast_enabled(device):
            # the plain path's lm_head runs in the autocast dtype: cast the operands once, as autocast would per call
            # (the in-place and out= matmuls below are exempt from autocast, so they would otherwise run in fp32)
            mm_dtype = torch.get_autocast_dtype(device)
            hidden, weight = hidden.to(mm_dtype), weight.to(mm_dtype)
        divisor = divisor.to(device=hidden.device, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = None  # (V, d) fp32, created by the first chunk's matmul (no zero fill)
        # (chunk_rows, V): the only vocabulary-sized buffer, reused by every chunk (a fresh one per chunk costs page
        # faults: ~30% of each logits matmul on CPU)
        buffer = hidden.new_empty((min(chunk_rows, hidden.shape[0]), weight.shape[0]))
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            chunk_hidden, chunk_targets = hidden[rows], targets[rows]
            logits = torch.mm(chunk_hidden, weight.t(), out=buffer[: chunk_hidden.shape[0]]).float()  # (n, V)
            if softcap is not None:
                # kept for backward: d(cap * tanh(z / cap))/dz = 1 - tanh(z / cap)^2
                tanh = logits.div_(softcap).tanh_()
                logits = tanh * softcap
            valid = chunk_targets != ignore_index
            chunk_targets = chunk_targets.masked_fill(~valid, 0)
            target_logits = logits.gather(1, chunk_targets[:, None]).squeeze(1)
            row_max = logits.amax(dim=-1)
            exp = logits.sub_(row_max[:, None]).exp_()  # in place: logits are not needed past this point
            sum_exp = exp.sum(dim=-1)
            total += torch.where(valid, row_max + sum_exp.log() - target_logits, 0.0).sum()
            if want_hidden or want_weight:
                row_scale = valid / divisor  # ignored rows get no gradient
                grad_logits = exp.mul_((row_scale / sum_exp)[:, None])  # softmax / divisor
                grad_logits.scatter_add_(1, chunk_targets[:, None], -row_scale[:, None])  # minus the one-hot target
                if softcap is not None:
                    grad_logits.mul_(tanh.square_().neg_().add_(1))  # through the cap to the raw logits
                grad_logits = grad_logits.to(weight.dtype)
                if want_hidden:
                    torch.mm(grad_logits, weight, out=grad_hidden[rows])
                if want_weight and grad_weight is None:
                    grad_weight = torch.mm(grad_logits.t(), chunk_hidden).float()
                elif want_weight and grad_weight.dtype == chunk_hidden.dtype:
                    grad_weight.addmm_(grad_logits.t(), chunk_hidden)
                elif want_weight:  # bf16/fp16 weights: accumulate the chunks in fp32
                    grad_weight += torch.mm(grad_logits.t(), chunk_hidden)
        grad_hidden = grad_hidden.to(hidden_dtype) if grad_hidden is not None else None
        ctx.grads = (grad_hidden, grad_weight.to(weight_dtype) if grad_weight is not None else None)
        return total / divisor

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.grads
        del ctx.grads
        # `loss.backward()` sends exactly 1: skip a pass over the (vocab, hidden) gradient then (free check on CPU)
        if grad_loss.device.type != "cpu" or grad_loss.item() != 1.0:
            grad_hidden = grad_hidden * grad_loss if grad_hidden is not None else None
            grad_weight = grad_weight * grad_loss if grad_weight is not None else None
        return grad_hidden, grad_weight, None, None, None, None, None


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    chunk_rows: int | None = None,
    softcap: float | None = None,
    **kwargs,
) -> torch.Tensor:
    """Transformers' `ForCausalLMLoss(hidden_states @ weight.T, labels, ...)`, the same semantics (labels shifted left
    with `ignore_index` padding, or `shift_labels` as given; sum / `num_items_in_batch`, else the mean over counted
    tokens) through `ChunkedLinearCrossEntropy`; `softcap` caps the logits as `config.final_logit_softcapping` does."""
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    targets = shift_labels.reshape(-1).to(hidden.device)
    if num_items_in_batch is None:
        num_items_in_batch = (targets != ignore_index).sum()
    divisor = torch.as_tensor(num_items_in_batch, device=hidden.device)
    elements = LOSS_CHUNK_ELEMENTS if hidden.device.type == "cpu" else LOSS_CHUNK_ELEMENTS_ACCELERATOR
    chunk_rows = chunk_rows or max(LOSS_CHUNK_MIN_ROWS, elements // weight.shape[0])
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, divisor, ignore_index, chunk_rows, softcap)
