"""The seed document's encoder, exactly: its two classes as the document writes them, with random weights copied into
gptforge through `from_seed_encoder`, give the same outputs over several stacked layers; the config fields that
express it (`attention_scale`, `shared_post_norm`) are validated, saved, loaded, shipped in the flat remote code and
shown in the model card."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from _consumers import HIDE_GPTFORGE
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import AutoModel

from gptforge import GPTForgeConfig, GPTForgeModel, from_seed_encoder, model_card
from gptforge.modeling import conversion

ATOL = 1e-6  # fp32; the eager computation is the document's, op for op (measured: 0)
SDPA_ATOL = 1e-5  # SDPA's fused kernel sums in another order (measured: up to 2.6e-6 on outputs of order 1)

# ---- the seed document's classes, as it writes them (only the indentation of its code blocks differs) ----


class SelfAttention(nn.Module):
    def __init__(self, hidden_size):
        super(SelfAttention, self).__init__()  # noqa: UP008 (the document's spelling)
        self.hidden_size = hidden_size

        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)

    def forward(self, inputs):
        Q = self.query(inputs)
        K = self.key(inputs)
        V = self.value(inputs)

        scores = torch.matmul(Q, K.transpose(-2, -1))
        attention_weights = torch.softmax(scores, dim=-1)

        output = torch.matmul(attention_weights, V)

        return output, attention_weights


class EncoderLayer(nn.Module):
    def __init__(self, hidden_size, num_heads, ff_dim, dropout_rate=0.1):
        super(EncoderLayer, self).__init__()  # noqa: UP008 (the document's spelling)

        self.self_attention = SelfAttention(hidden_size)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_size, ff_dim),
            nn.ReLU(),
            nn.Linear(ff_dim, hidden_size)
        )  # fmt: skip
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, inputs):
        attention_output, _ = self.self_attention(inputs)
        attention_output = self.dropout(attention_output)
        residual_output = self.layer_norm(inputs + attention_output)

        feed_forward_output = self.feed_forward(residual_output)
        feed_forward_output = self.dropout(feed_forward_output)
        output = self.layer_norm(residual_output + feed_forward_output)

        return output


# ---- helpers ----

HIDDEN, FF_DIM, LAYERS, VOCAB = 64, 256, 4, 100


def seed_stack() -> nn.ModuleList:
    """Four stacked document layers with random weights, LayerNorm included (it starts at exactly 1 / 0)."""
    layers = nn.ModuleList(EncoderLayer(HIDDEN, num_heads=8, ff_dim=FF_DIM) for _ in range(LAYERS))
    with torch.no_grad():
        for layer in layers:
            layer.layer_norm.weight.add_(torch.randn(HIDDEN) * 0.2)
            layer.layer_norm.bias.add_(torch.randn(HIDDEN) * 0.2)
    return layers.eval()


def run_seed(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def gptforge_inputs(model: GPTForgeModel, ids: torch.Tensor) -> torch.Tensor:
    """What gptforge feeds its first block: token plus learned position embeddings."""
    return model.embed_tokens(ids) + model.embed_positions(torch.arange(ids.shape[1]))


# ---- parity ----


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_seed_encoder_layers_and_gptforge_give_the_same_outputs(impl):
    layers = seed_stack()
    model = from_seed_encoder(layers, vocab_size=VOCAB)
    model.set_attn_implementation(impl)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (LAYERS, HIDDEN, FF_DIM)
    assert config.num_attention_heads == 1 and config.attention_scale == 1.0 and config.shared_post_norm
    assert "layers.0.post_attention_layernorm.weight" not in model.state_dict()

    ids = torch.randint(0, VOCAB, (3, 20))
    with torch.no_grad():
        expected = run_seed(layers, gptforge_inputs(model, ids))
        actual = model(ids).last_hidden_state
        torch.testing.assert_close(actual, expected, rtol=0, atol=ATOL if impl == "eager" else SDPA_ATOL)
        # an all-ones mask changes nothing (the document's attention has no mask)
        torch.testing.assert_close(model(ids, attention_mask=torch.ones_like(ids)).last_hidden_state, actual)


def test_seed_encoder_parity_holds_in_training_mode_with_the_same_dropout_draws():
    layers = seed_stack().train()
    model = from_seed_encoder(layers, vocab_size=VOCAB).train()
    model.set_attn_implementation("eager")
    assert model.config.hidden_dropout == 0.1  # the document's dropout_rate
    ids = torch.randint(0, VOCAB, (2, 12))
    x = gptforge_inputs(model, ids).detach()
    torch.manual_seed(7)
    expected = run_seed(layers, x)
    torch.manual_seed(7)
    actual = model(ids).last_hidden_state  # embedding dropout is 0: the same draws, in the same order
    torch.testing.assert_close(actual, expected, rtol=0, atol=ATOL)
    expected.sum().backward()
    actual.sum().backward()
    torch.testing.assert_close(
        model.layers[0].self_attn.q_proj.weight.grad, layers[0].self_attention.query.weight.grad, rtol=0, atol=1e-5
    )


def test_the_missing_output_projection_is_an_identity_with_zero_bias():
    model = from_seed_encoder(seed_stack(), vocab_size=VOCAB)
    for layer in model.layers:
        assert torch.equal(layer.self_attn.o_proj.weight, torch.eye(HIDDEN))
        assert torch.equal(layer.self_attn.o_proj.bias, torch.zeros(HIDDEN))


def test_from_seed_encoder_is_a_top_level_name():
    import gptforge

    # `from gptforge import from_seed_encoder` (above, and in the README) loads it lazily, as `from_transformers`
    assert from_seed_encoder is conversion.from_seed_encoder is gptforge.from_seed_encoder
    assert "from_seed_encoder" in gptforge.__all__


def test_from_seed_encoder_refuses_other_layers():
    torch_layer = nn.TransformerEncoderLayer(HIDDEN, 4, FF_DIM, batch_first=True)
    with pytest.raises(ValueError, match="converts the seed document's EncoderLayer .* got TransformerEncoderLayer"):
        from_seed_encoder([torch_layer])
    with pytest.raises(ValueError, match="needs at least one EncoderLayer, got none"):
        from_seed_encoder([])
    with pytest.raises(ValueError, match="keep num_attention_heads=1, attention_scale=1.0 and is_causal=False"):
        from_seed_encoder(seed_stack(), vocab_size=VOCAB, attention_scale=0.5)


# ---- the config fields ----


def test_seed_encoder_preset():
    config = GPTForgeConfig.from_preset("seed-encoder")
    assert config.shared_post_norm and config.norm_position == "post" and not config.is_causal
    assert config.attention_scale == 1.0 and config.num_attention_heads == 1 and config.head_dim == 256
    assert (config.mlp_type, config.hidden_act, config.attention_dropout) == ("plain", "relu", 0.0)
    assert "seed-encoder" in GPTForgeConfig.list_presets()


def test_attention_scale_defaults_to_one_over_sqrt_head_dim():
    model = GPTForgeModel(GPTForgeConfig.from_preset("tiny", head_dim=16))
    assert model.config.attention_scale is None and model.layers[0].self_attn.scaling == 16**-0.5
    scaled = GPTForgeModel(GPTForgeConfig.from_preset("tiny", attention_scale=0.125))
    assert scaled.layers[0].self_attn.scaling == 0.125


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(shared_post_norm=True), r"shared_post_norm=True needs norm_position='post', got norm_position='pre'"),
        (dict(attention_scale=0.0), r"attention_scale must be None \(1/sqrt\(head_dim\)\) or a positive number, got "
         r"attention_scale=0.0"),
        (dict(attention_scale=-1.0), r"got attention_scale=-1.0"),
        (dict(attention_scale=float("inf")), r"got attention_scale=inf"),
    ],
)  # fmt: skip
def test_new_fields_are_validated(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTForgeConfig(**overrides)


def test_attention_scale_must_be_a_float():
    with pytest.raises(StrictDataclassFieldValidationError, match="attention_scale"):
        GPTForgeConfig(attention_scale="1")


def test_new_fields_survive_save_and_load(tmp_path):
    model = from_seed_encoder(seed_stack(), vocab_size=VOCAB)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["attention_scale"] == 1.0 and saved["shared_post_norm"] is True
    loaded = GPTForgeModel.from_pretrained(tmp_path).eval()
    # (a loaded model's config records where it came from, as with native models)
    assert {**loaded.config.to_dict(), "_name_or_path": ""} == model.config.to_dict()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).last_hidden_state, model(ids).last_hidden_state, rtol=0, atol=0)


WITHOUT_GPTFORGE = (
    HIDE_GPTFORGE
    + r"""
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert model.config.attention_scale == 1.0 and model.config.shared_post_norm
with torch.no_grad():
    hidden = model(load_file(folder + "/ids.safetensors")["ids"]).last_hidden_state
save_file({"hidden": hidden.contiguous()}, folder + "/remote.safetensors")
"""
)


def test_the_seed_encoder_loads_from_the_flat_remote_code_without_gptforge(tmp_path):
    from safetensors.torch import load_file, save_file

    model = from_seed_encoder(seed_stack(), vocab_size=VOCAB)
    model.save_pretrained(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 9))
    save_file({"ids": ids}, tmp_path / "ids.safetensors")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", WITHOUT_GPTFORGE, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with torch.no_grad():
        expected = model(ids).last_hidden_state
    torch.testing.assert_close(load_file(tmp_path / "remote.safetensors")["hidden"], expected, rtol=0, atol=0)
    assert isinstance(AutoModel.from_pretrained(tmp_path), GPTForgeModel)  # with gptforge: the package's classes


def test_the_model_card_shows_the_new_fields(tmp_path):
    from_seed_encoder(seed_stack(), vocab_size=VOCAB).save_pretrained(tmp_path)
    card = model_card.model_card(tmp_path, repo_id="me/seed")
    assert "| attention | bidirectional, scores scaled by 1.0 |" in card
    assert "| norm | layernorm, post-norm, eps 1e-05, one norm shared by both residual joins |" in card
    GPTForgeModel(GPTForgeConfig.from_preset("tiny", num_hidden_layers=1)).save_pretrained(tmp_path / "plain")
    plain = model_card.model_card(tmp_path / "plain", repo_id="me/plain")
    assert "| attention | causal |" in plain and "| norm | rmsnorm, pre-norm, eps 1e-06 |" in plain
