"""Behaviour of the model as a Transformers user meets it: caches, padding, attention backends, outputs, heads."""

import pytest
import torch
from _helpers import ARCHITECTURES, arch_config, left_padded
from transformers import DynamicCache, StaticCache

from gptforge import (
    GPTForgeForCausalLM,
    GPTForgeForSequenceClassification,
    GPTForgeForTokenClassification,
    GPTForgeModel,
)

ARCHS = sorted(ARCHITECTURES)


def causal_lm(name: str, **overrides) -> GPTForgeForCausalLM:
    return GPTForgeForCausalLM(arch_config(name, **overrides)).eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cache_cls", ["dynamic", "static"])
def test_token_by_token_decoding_with_cache_equals_full_forward(arch, cache_cls):
    model = causal_lm(arch)
    ids = torch.randint(0, 128, (2, 12))
    full = model(ids).logits
    cache = (
        DynamicCache(config=model.config) if cache_cls == "dynamic" else StaticCache(model.config, max_cache_len=32)
    )
    out = model(ids[:, :5], cache=cache, use_cache=True)
    steps = [out.logits]
    for t in range(5, 12):
        out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_passed_as_past_key_values_is_used_too():
    # Transformers 5.24's generate passes `cache=`; older callers pass `past_key_values=`: both must be honoured
    model = causal_lm("llama")
    ids = torch.randint(0, 128, (1, 8))
    prefix = model(ids[:, :7], use_cache=True)
    with pytest.warns(FutureWarning, match="`past_key_values` is deprecated"):  # Transformers' own notice, as Llama's
        via_old_name = model(ids[:, 7:], past_key_values=prefix.cache).logits
    torch.testing.assert_close(via_old_name[:, -1], model(ids).logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batch_equals_each_row_alone(arch):
    model = causal_lm(arch)
    rows = [torch.randint(0, 128, (n,)) for n in (9, 5, 7)]
    ids, mask = left_padded(rows)
    batched = model(ids, attention_mask=mask).logits
    for i, row in enumerate(rows):
        alone = model(row[None]).logits[0]
        torch.testing.assert_close(batched[i, -len(row) :], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS + ["encoder"])
@pytest.mark.parametrize("impl", ["sdpa", "flex_attention"])
def test_attention_backends_agree_with_eager(arch, impl):
    if arch == "encoder":
        config = arch_config("postnorm-causal", is_causal=False)
    else:
        config = arch_config(arch)
    eager = GPTForgeForCausalLM._from_config(config, attn_implementation="eager").eval()
    other = GPTForgeForCausalLM._from_config(config, attn_implementation=impl).eval()
    other.load_state_dict(eager.state_dict())
    assert other.config._attn_implementation == impl
    ids = torch.randint(0, 128, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    with torch.no_grad():  # flex attention has no backward on CPU
        expected = eager(ids, attention_mask=mask).logits
        actual = other(ids, attention_mask=mask).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_set_attn_implementation_switches_backend():
    model = causal_lm("llama")
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"


def test_output_attentions_and_hidden_states():
    model = GPTForgeForCausalLM._from_config(arch_config("llama"), attn_implementation="eager").eval()
    ids = torch.randint(0, 128, (2, 6))
    out = model(ids, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 6, 6)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 6))
    assert torch.all(out.attentions[0].triu(1) == 0)  # causal
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 6, 64)
    torch.testing.assert_close(out.hidden_states[-1], model.model(ids).last_hidden_state)


def test_return_dict_false_gives_tuples():
    model = causal_lm("llama")
    ids = torch.randint(0, 128, (1, 5))
    labels = ids.clone()
    loss, logits = model(ids, labels=labels, use_cache=False, return_dict=False)
    out = model(ids, labels=labels, use_cache=False)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)


def test_inputs_embeds_equals_input_ids():
    model = causal_lm("gpt2")
    ids = torch.randint(0, 128, (2, 7))
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits)


def test_both_or_neither_of_ids_and_embeds_is_an_error():
    model = causal_lm("llama")
    ids = torch.randint(0, 128, (1, 3))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=model.get_input_embeddings()(ids))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


def test_logits_to_keep():
    model = causal_lm("llama")
    ids = torch.randint(0, 128, (2, 9))
    full = model(ids).logits
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, full[:, -1:])
    torch.testing.assert_close(model(ids, logits_to_keep=3).logits, full[:, -3:])


def test_tied_and_untied_heads():
    tied = causal_lm("gpt2")
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    untied = causal_lm("llama")
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert GPTForgeForCausalLM._tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}


def test_resize_token_embeddings_keeps_tying_and_rows():
    model = causal_lm("gpt2")
    before = model.get_input_embeddings().weight[:128].clone()
    model.resize_token_embeddings(160)
    assert model.config.vocab_size == 160
    assert model.get_input_embeddings().weight.shape == (160, 64)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.get_input_embeddings().weight[:128], before)
    assert model(torch.tensor([[150, 3]])).logits.shape == (1, 2, 160)


def test_num_parameters_counts_tied_weights_once():
    model = causal_lm("gpt2")
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.num_parameters(exclude_embeddings=True) < model.num_parameters()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_casts(dtype):
    model = causal_lm("llama").to(dtype)
    out = model(torch.randint(0, 128, (1, 6)))
    assert out.logits.dtype == dtype and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_activation_checkpointing_gives_the_same_gradients(arch):
    model = GPTForgeForCausalLM(arch_config(arch)).train()
    ids = torch.randint(0, 128, (2, 10))

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable()  # Transformers 5.24's name for gradient_checkpointing_enable
    assert model.is_activation_checkpointing
    checkpointed = grads()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_loss_ignores_minus_100_and_normalises_by_num_items_in_batch():
    model = causal_lm("llama")
    ids = torch.randint(0, 128, (2, 8))
    labels = ids.clone()
    labels[0, :4] = -100
    mean_loss = model(ids, labels=labels).loss
    summed = model(ids, labels=labels, num_items_in_batch=torch.tensor(1)).loss
    n_items = (labels[:, 1:] != -100).sum()
    torch.testing.assert_close(summed / n_items, mean_loss)


def test_sequence_classification_pools_the_last_real_token():
    config = arch_config("llama", num_labels=3, pad_token_id=0)
    model = GPTForgeForSequenceClassification(config).eval()
    row = torch.randint(1, 128, (5,))
    alone = model(row[None]).logits
    left = model(
        torch.cat([torch.zeros(3, dtype=torch.long), row])[None], attention_mask=torch.tensor([[0] * 3 + [1] * 5])
    ).logits
    right_ids = torch.cat([row, torch.zeros(3, dtype=torch.long)])[None]
    right = model(right_ids).logits  # no mask: the pad id marks the end, as in GPT-2
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    out = model(row[None], labels=torch.tensor([2]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(alone, torch.tensor([2])))


def test_token_classification_head():
    config = arch_config("postnorm-causal", is_causal=False, num_labels=5)
    model = GPTForgeForTokenClassification(config).eval()
    ids = torch.randint(0, 128, (2, 7))
    labels = torch.randint(0, 5, (2, 7))
    out = model(ids, labels=labels)
    assert out.logits.shape == (2, 7, 5)
    torch.testing.assert_close(
        out.loss, torch.nn.functional.cross_entropy(out.logits.reshape(-1, 5), labels.reshape(-1))
    )


def test_base_model_returns_hidden_states_and_no_cache_in_training():
    model = GPTForgeModel(arch_config("llama")).train()
    out = model(torch.randint(0, 128, (1, 4)))
    assert out.last_hidden_state.shape == (1, 4, 64) and out.cache is None


def test_torch_compile_matches_eager():
    model = causal_lm("llama")
    ids = torch.randint(0, 128, (2, 8))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(ids, use_cache=False).logits, model(ids, use_cache=False).logits)
