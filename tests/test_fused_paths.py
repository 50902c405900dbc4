"""Every fast path of the model against the plain path it replaces: the chunked LM-head loss (loss and every
gradient), the RMSNorm paths, the memory-saving SwiGLU product, and the mask-free SDPA path for unpadded inputs."""

import pytest
import torch
from _helpers import arch_config
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import DynamicCache
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from gptforge import GPTForgeForCausalLM
from gptforge.modeling.modeling_gptforge import (
    GPTForgeMLP,
    GPTForgeRMSNorm,
    RMSNormFunction,
    SiLUMul,
    chunked_causal_lm_loss,
)

# fp32 sums in a different order: ulp-level differences on O(1) values
LOSS_TOL = dict(atol=1e-6, rtol=1e-6)
GRAD_TOL = dict(atol=1e-7, rtol=1e-5)


def loss_and_grads(model: nn.Module, chunk_size: int | None, **inputs) -> tuple[torch.Tensor, dict, object]:
    model.config.loss_chunk_size = chunk_size
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads, out


def assert_same_training_signal(model: nn.Module, chunk_size: int | None, **inputs) -> None:
    model.train()
    ref_loss, ref_grads, ref_out = loss_and_grads(model, 0, **inputs)  # 0: the plain path
    loss, grads, out = loss_and_grads(model, chunk_size, **inputs)
    assert ref_out.logits is not None and out.logits is None  # the chunked path really ran
    torch.testing.assert_close(loss, ref_loss, **LOSS_TOL)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **GRAD_TOL, msg=name)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # untied and tied (lm_head is the embedding) heads
@pytest.mark.parametrize("chunk_size", [None, 7, 48])  # automatic (one chunk here), uneven, exact split
def test_chunked_loss_gives_the_plain_loss_and_gradients(arch, chunk_size):
    model = GPTForgeForCausalLM(arch_config(arch, vocab_size=257))
    ids = torch.randint(0, 257, (3, 16))
    labels = ids.clone()
    labels[0, :5] = -100  # ignored positions, as a prompt mask makes them
    assert_same_training_signal(model, chunk_size, input_ids=ids, labels=labels)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_chunked_loss_under_autocast_matches_the_plain_autocast_path(arch):
    """Trainer's `bf16=True` runs the forward under autocast: the chunked head must do its matmuls in bf16 as the
    plain lm_head does (in-place and out= matmuls are exempt from autocast, so it casts itself), and hand back fp32
    gradients for the fp32 parameters. Both paths round the same bf16 matmuls; they differ only where fp32 sums run
    in another order before a bf16 rounding, so the bound is bf16's (relative norm error 1e-2)."""
    torch.manual_seed(0)
    model = GPTForgeForCausalLM(arch_config(arch, vocab_size=300)).train()
    ids = torch.randint(0, 300, (2, 24))
    results = {}
    for chunk_size in (0, 10):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[chunk_size] = loss_and_grads(model, chunk_size, input_ids=ids, labels=ids)
    (ref_loss, ref_grads, ref_out), (loss, grads, out) = results[0], results[10]
    assert ref_out.logits is not None and out.logits is None  # the chunked path really ran
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, atol=1e-3, rtol=1e-3)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        assert grads[name].dtype == torch.float32, name
        error = (grads[name] - ref).norm() / ref.norm()
        assert error < 1e-2, f"{name}: relative error {error:.2e}"


class MatmulDtypes(TorchFunctionMode):
    """Records the operand dtypes of every matrix product called through torch's Python API."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("mm", "addmm_", "matmul"):
            self.seen.append(tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))
        return func(*args, **(kwargs or {}))


def test_chunked_loss_runs_its_matmuls_in_the_autocast_dtype():
    """fp32 logits matmuls under bf16 autocast would be correct but several times slower on a GPU (measured: an H200
    step at 0.80x Llama's); every product the chunked loss does must take bf16 operands."""
    hidden = torch.randn(20, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 10))
    with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes() as record:
        loss = chunked_causal_lm_loss(hidden.view(2, 10, 16), weight, labels, chunk_rows=4)
    loss.backward()
    assert len(record.seen) >= 3 * 5  # logits, grad_hidden, grad_weight for each of the 5 chunks
    assert all(dtypes == (torch.bfloat16, torch.bfloat16) for dtypes in record.seen), record.seen
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32


def test_chunked_loss_honours_num_items_in_batch_and_shift_labels():
    """Gradient accumulation (`num_items_in_batch`, int or tensor) and pre-shifted labels, as Trainer passes them."""
    model = GPTForgeForCausalLM(arch_config("llama", vocab_size=200))
    ids = torch.randint(0, 200, (2, 12))
    shift = torch.randint(0, 200, (2, 12))
    shift[1, 3:] = -100
    for kwargs in (dict(num_items_in_batch=40), dict(num_items_in_batch=torch.tensor(40)), dict(shift_labels=shift)):
        assert_same_training_signal(model, 5, input_ids=ids, labels=ids, **kwargs)


def test_chunked_loss_function_equals_transformers_loss_for_every_option():
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9))
    labels[1, :4] = 7
    for kwargs in (dict(), dict(num_items_in_batch=11), dict(ignore_index=7), dict(shift_labels=labels.flip(1))):
        reference = ForCausalLMLoss(hidden @ weight.T, labels, vocab_size=50, **kwargs)
        ref_grads = torch.autograd.grad(reference, (hidden, weight))
        chunked = chunked_causal_lm_loss(hidden, weight, labels, chunk_rows=4, **kwargs)
        grads = torch.autograd.grad(chunked, (hidden, weight))
        torch.testing.assert_close(chunked, reference, **LOSS_TOL)
        for got, expected in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, expected, **GRAD_TOL)


def test_chunked_loss_scales_its_gradients_by_the_incoming_gradient():
    torch.manual_seed(0)
    hidden = torch.randn(1, 6, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    labels = torch.randint(0, 30, (1, 6))
    once = torch.autograd.grad(chunked_causal_lm_loss(hidden, weight, labels, chunk_rows=2), (hidden, weight))
    scaled = torch.autograd.grad(2.5 * chunked_causal_lm_loss(hidden, weight, labels, chunk_rows=2), (hidden, weight))
    for a, b in zip(once, scaled, strict=True):
        torch.testing.assert_close(b, 2.5 * a)


def test_chunked_loss_frozen_head_or_frozen_trunk():
    """Only the gradients that are asked for are computed (LoRA freezes the head; a probe freezes the trunk)."""
    torch.manual_seed(0)
    hidden = torch.randn(1, 5, 8, requires_grad=True)
    weight = torch.randn(20, 8, requires_grad=True)
    labels = torch.randint(0, 20, (1, 5))
    (grad_hidden,) = torch.autograd.grad(chunked_causal_lm_loss(hidden, weight.detach(), labels, chunk_rows=2), hidden)
    (expected,) = torch.autograd.grad(ForCausalLMLoss(hidden @ weight.detach().T, labels, vocab_size=20), hidden)
    torch.testing.assert_close(grad_hidden, expected, **GRAD_TOL)
    (grad_weight,) = torch.autograd.grad(chunked_causal_lm_loss(hidden.detach(), weight, labels, chunk_rows=2), weight)
    (expected,) = torch.autograd.grad(ForCausalLMLoss(hidden.detach() @ weight.T, labels, vocab_size=20), weight)
    torch.testing.assert_close(grad_weight, expected, **GRAD_TOL)


def test_logits_are_kept_where_they_are_needed():
    model = GPTForgeForCausalLM(arch_config("llama"))
    ids = torch.randint(0, 128, (2, 10))
    assert model.train()(input_ids=ids, labels=ids).logits is None
    with torch.no_grad():  # evaluation inside a training loop
        assert model(input_ids=ids, labels=ids).logits is not None
    eval_out = model.eval()(input_ids=ids, labels=ids)  # Trainer.evaluate: logits for metrics
    train_loss = model.train()(input_ids=ids, labels=ids).loss
    assert eval_out.logits.shape == (2, 10, 128)
    torch.testing.assert_close(eval_out.loss, train_loss, **LOSS_TOL)


def test_wrapped_or_hooked_head_keeps_the_plain_path():
    """A hook (or a PEFT/FSDP wrapper) may change what lm_head computes; the chunked path must not bypass it."""
    model = GPTForgeForCausalLM(arch_config("llama")).train()
    ids = torch.randint(0, 128, (2, 10))
    handle = model.lm_head.register_forward_hook(lambda module, args, output: output * 2)
    out = model(input_ids=ids, labels=ids)
    assert out.logits is not None
    expected = ForCausalLMLoss(out.logits, ids, vocab_size=128, num_items_in_batch=(ids[:, 1:] != -100).sum())
    torch.testing.assert_close(out.loss, expected)
    handle.remove()
    assert model(input_ids=ids, labels=ids).logits is None


@pytest.mark.parametrize("shape", [(1, 1, 64), (3, 7, 64), (2, 5, 33)])
def test_fp32_rmsnorm_is_bitwise_llamas(shape):
    torch.manual_seed(0)
    ours, llama = GPTForgeRMSNorm(shape[-1], eps=1e-5), LlamaRMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        llama.weight.copy_(ours.weight)
    x = torch.randn(shape) * 3
    assert torch.equal(ours(x), llama(x))
    x.requires_grad_(True)  # now through RMSNormFunction: the same output, gradients within fp32 rounding
    assert torch.equal(ours(x), llama(x))
    grad = torch.randn(shape)
    ours_grads = torch.autograd.grad(ours(x), (x, ours.weight), grad)
    llama_grads = torch.autograd.grad(llama(x), (x, llama.weight), grad)
    for mine, reference in zip(ours_grads, llama_grads):
        torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-5)


def test_rmsnorm_keeps_its_input_not_the_normalised_input_for_backward():
    norm = GPTForgeRMSNorm(24)
    x = torch.randn(2, 5, 24, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        norm(x)
    assert [t.shape for t in saved if t.shape == x.shape] == [x.shape]  # x only (autograd's also keeps x * rstd)
    assert any(t is x or t.data_ptr() == x.data_ptr() for t in saved)


def test_rmsnorm_function_second_derivatives_and_frozen_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, dtype=torch.float64, requires_grad=True)
    results = []
    for norm in (RMSNormFunction.apply, lambda x, w, eps: nn.functional.rms_norm(x, w.shape, w, eps)):
        grads = torch.autograd.grad(norm(x, weight, 1e-6).sin().sum(), (x, weight), create_graph=True)
        results.append(torch.autograd.grad(sum(g.square().sum() for g in grads), (x, weight)))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference)
    (weight_only,) = torch.autograd.grad(RMSNormFunction.apply(x.detach(), weight, 1e-6).sum(), weight)
    (reference,) = torch.autograd.grad(nn.functional.rms_norm(x.detach(), (8,), weight, 1e-6).sum(), weight)
    torch.testing.assert_close(weight_only, reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_is_bitwise_the_plain_ops(dtype):
    torch.manual_seed(0)
    gate = (torch.randn(3, 7, 40) * 4).to(dtype).requires_grad_(True)
    up = torch.randn(3, 7, 40).to(dtype).requires_grad_(True)
    grad = torch.randn(3, 7, 40).to(dtype)
    fused, plain = SiLUMul.apply(gate, up), nn.functional.silu(gate) * up
    assert torch.equal(fused, plain)
    for ours, reference in zip(
        torch.autograd.grad(fused, (gate, up), grad), torch.autograd.grad(plain, (gate, up), grad)
    ):
        assert torch.equal(ours, reference)


def test_silu_mul_has_second_derivatives():
    """`create_graph=True` (gradient penalties, meta-learning) differentiates the backward itself."""
    torch.manual_seed(0)
    gate = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    up = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    results = []
    for product in (SiLUMul.apply, lambda g, u: nn.functional.silu(g) * u):
        grads = torch.autograd.grad(product(gate, up).square().sum(), (gate, up), create_graph=True)
        results.append(torch.autograd.grad(sum(g.square().sum() for g in grads), (gate, up)))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference)


def saved_intermediate_tensors(mlp: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The MLP's output, and how many (tokens, intermediate)-sized tensors its forward keeps for backward."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = mlp(x)
    widths = {t.untyped_storage().data_ptr() for t in saved if t.shape[-1] == mlp.up_proj.out_features}
    return out, len(widths)


def test_swiglu_mlp_keeps_three_intermediate_tensors_not_four_with_the_same_gradients():
    torch.manual_seed(0)
    mlp = GPTForgeMLP(arch_config("llama", intermediate_size=96))
    assert mlp.silu_gate
    x = torch.randn(2, 5, mlp.up_proj.in_features)
    results = {}
    for fused in (True, False):
        mlp.silu_gate = fused  # False: act_fn(gate) * up, as Llama's MLP
        mlp.zero_grad(set_to_none=True)
        out, count = saved_intermediate_tensors(mlp, x)
        out.sum().backward()
        results[fused] = out, count, {name: p.grad for name, p in mlp.named_parameters()}
    (out, count, grads), (ref_out, ref_count, ref_grads) = results[True], results[False]
    assert (count, ref_count) == (3, 4)  # gate, up, their product (down_proj's input); plain also keeps silu(gate)
    assert torch.equal(out, ref_out)
    assert all(torch.equal(grads[name], ref_grads[name]) for name in ref_grads)


@pytest.mark.parametrize("act, expected", [("silu", True), ("gelu", False)])
def test_silu_mul_only_for_swiglu(act, expected):
    assert GPTForgeMLP(arch_config("llama", hidden_act=act)).silu_gate is expected
    assert not GPTForgeMLP(arch_config("gpt2")).silu_gate  # plain MLP: nothing to fuse


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_unpadded_inputs_skip_the_mask_with_the_same_result(arch):
    """No mask, an all-ones mask (both mask-free) and explicit positions (the `create_causal_mask` path) agree."""
    model = GPTForgeForCausalLM(arch_config(arch)).eval()
    ids = torch.randint(0, 128, (2, 12))
    positions = torch.arange(12).expand(2, -1)
    with torch.no_grad():
        plain = model(input_ids=ids, position_ids=positions).logits
        assert torch.equal(model(input_ids=ids).logits, plain)
        assert torch.equal(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, plain)
        # a growing cache, one token at a time, mask-free too
        cache = DynamicCache(config=model.config)
        steps = [model(input_ids=ids[:, :5], cache=cache).logits]
        for t in range(5, 12):
            steps.append(model(input_ids=ids[:, t : t + 1], attention_mask=torch.ones(2, t + 1), cache=cache).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generate_takes_the_mask_free_path_with_the_same_tokens(arch, monkeypatch):
    """`generate` passes its own position_ids and drops an all-ones mask at every step: the mask-free path must still
    fire there (no `create_causal_mask` call per token), and decode exactly what the masked eager path decodes."""
    import gptforge.modeling.modeling_gptforge as modeling

    model = GPTForgeForCausalLM(arch_config(arch)).eval()
    prompt = torch.randint(1, 128, (1, 6))
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    model.config._attn_implementation = "eager"  # always builds its mask
    expected = model.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
    model.config._attn_implementation = "sdpa"
    calls = []
    original = modeling.create_causal_mask
    monkeypatch.setattr(modeling, "create_causal_mask", lambda **kw: calls.append(1) or original(**kw))
    tokens = model.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
    assert torch.equal(tokens, expected)
    assert calls == []
