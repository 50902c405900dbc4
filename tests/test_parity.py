"""Exact parity with the reference implementations: Transformers' GPT-2 and Llama (both ways), and PyTorch's
post-norm encoder. Weights go through gptforge's own conversion code; fp32 logits must agree to 1e-4."""

import pytest
import torch
from _helpers import arch_config
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from gptforge import GPTForgeConfig, GPTForgeForCausalLM, GPTForgeModel, from_transformers, to_transformers
from gptforge.modeling.conversion import load_torch_encoder_layers

ATOL = 1e-4


def gpt2_reference(**overrides) -> GPT2LMHeadModel:
    config = dict(vocab_size=120, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(GPT2Config(**{**config, **overrides})).eval()


def llama_reference(**overrides) -> LlamaForCausalLM:
    config = dict(
        vocab_size=120, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return LlamaForCausalLM(LlamaConfig(**{**config, **overrides})).eval()


def randomise_norms(model: nn.Module) -> None:
    """Norm weights start at exactly 1 / 0; random values make a swapped or dropped norm visible."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)


@pytest.fixture
def ids():
    return torch.randint(0, 120, (3, 17))


@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_logits_match_after_conversion(ids, tie):
    reference = gpt2_reference(tie_word_embeddings=tie)
    randomise_norms(reference)
    model = from_transformers(reference)
    assert isinstance(model, GPTForgeForCausalLM)
    assert model.config.position_embedding_type == "learned" and model.config.tie_word_embeddings == tie
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_llama_logits_match_after_conversion(ids, kv_heads):
    reference = llama_reference(num_key_value_heads=kv_heads)
    randomise_norms(reference)
    model = from_transformers(reference)
    assert model.config.num_key_value_heads == kv_heads
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=ATOL, rtol=0)


def test_llama_variants_with_biases_head_dim_and_rope_scaling(ids):
    reference = llama_reference(
        attention_bias=True,
        mlp_bias=True,
        head_dim=32,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
    )
    randomise_norms(reference)
    model = from_transformers(reference)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_gptforge_to_native_and_back(ids, name):
    config = arch_config(name, vocab_size=120)
    model = GPTForgeForCausalLM(config).eval()
    randomise_norms(model)
    native = to_transformers(model)
    assert type(native) is (GPT2LMHeadModel if name == "gpt2" else LlamaForCausalLM)
    torch.testing.assert_close(native(ids).logits, model(ids).logits, atol=ATOL, rtol=0)
    again = from_transformers(native)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2), k1


def test_to_transformers_names_what_does_not_map():
    model = GPTForgeForCausalLM(arch_config("postnorm-causal"))
    with pytest.raises(
        ValueError, match=r"no exact native Transformers counterpart.*norm_position='post' \(needs 'pre'\)"
    ) as caught:
        to_transformers(model)
    assert str(caught.value).endswith(
        "`gptforge pretrain --recipe modern-exportable` (or `classic`) keeps the native and GGUF exports."
    )


def test_from_transformers_rejects_other_models():
    with pytest.raises(ValueError, match="converts GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM, got Linear"):
        from_transformers(nn.Linear(2, 2))


def test_gpt2_feature_without_counterpart_is_named():
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True has no gptforge counterpart"):
        from_transformers(gpt2_reference(scale_attn_by_inverse_layer_idx=True))


def test_conversion_keeps_dtype(ids):
    model = from_transformers(llama_reference().to(torch.bfloat16))
    assert model.dtype == torch.bfloat16
    assert model(ids).logits.dtype == torch.bfloat16


@pytest.mark.parametrize("with_padding", [False, True])
def test_encoder_matches_torch_transformer_encoder(with_padding):
    config = GPTForgeConfig.from_preset(
        "encoder", hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=3, vocab_size=120
    )
    model = GPTForgeModel(config).eval()
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, activation="relu", batch_first=True, norm_first=False)
    reference = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False).eval()
    randomise_norms(reference)
    load_torch_encoder_layers(model, reference)

    ids = torch.randint(0, 120, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    if with_padding:
        mask[1, 7:] = 0
    x = model.embed_tokens(ids) + model.embed_positions(torch.arange(12))
    expected = reference(x, src_key_padding_mask=mask == 0)
    actual = model(ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(actual[real], expected[real], atol=ATOL, rtol=0)


def test_encoder_is_bidirectional():
    config = GPTForgeConfig.from_preset("encoder", hidden_size=64, num_hidden_layers=1, vocab_size=50)
    model = GPTForgeModel(config).eval()
    ids = torch.randint(0, 50, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 50
    # changing the last token changes the first position's output only when attention looks ahead
    assert not torch.allclose(model(ids).last_hidden_state[0, 0], model(changed).last_hidden_state[0, 0])
