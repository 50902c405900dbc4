"""GPTForgeConfig: presets, validation with clear errors, serialisation, registration."""

import json

import pytest
from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from gptforge import PRESETS, GPTForgeConfig


def test_model_type_is_not_a_native_transformers_type():
    # a collision would make trust_remote_code=True and False load different models (the MPT lesson)
    assert "gptforge" not in CONFIG_MAPPING_NAMES


def test_registered_with_autoconfig():
    config = AutoConfig.for_model("gptforge", hidden_size=64, num_attention_heads=4)
    assert isinstance(config, GPTForgeConfig)


def test_defaults_build_without_arguments():
    config = GPTForgeConfig()
    assert config.head_dim == 64
    assert config.num_key_value_heads == config.num_attention_heads
    assert config.intermediate_size == 2048  # 8/3 * 768 rounded up to a multiple of 256
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}


def test_presets_are_listed_and_include_the_required_ones():
    names = GPTForgeConfig.list_presets()
    assert names == sorted(PRESETS)
    assert {"tiny", "gpt2-124m", "encoder", "llama-34m", "llama-135m"} <= set(names)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_round_trips_json(name, tmp_path):
    config = GPTForgeConfig.from_preset(name)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, GPTForgeConfig)
    assert reloaded.to_diff_dict() == config.to_diff_dict()


def test_gpt2_preset_is_gpt2_small():
    config = GPTForgeConfig.from_preset("gpt2-124m")
    assert (config.n_embd, config.n_layer, config.n_head, config.n_positions) == (768, 12, 12, 1024)
    assert config.layer_norm_epsilon == 1e-5
    assert config.tie_word_embeddings and config.position_embedding_type == "learned"


def test_preset_overrides():
    config = GPTForgeConfig.from_preset("tiny", vocab_size=512, num_hidden_layers=1)
    assert (config.vocab_size, config.num_hidden_layers, config.hidden_size) == (512, 1, 128)


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"unknown preset 'gpt5'; expected one of \['encoder', "):
        GPTForgeConfig.from_preset("gpt5")


def test_unknown_keyword_is_kept_like_any_transformers_config():
    assert GPTForgeConfig(my_note="x").my_note == "x"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(hidden_size=30, num_attention_heads=4), r"hidden_size=30 is not divisible by num_attention_heads=4"),
        (dict(num_key_value_heads=5), r"num_key_value_heads=5 must divide num_attention_heads=12"),
        (dict(vocab_size=0), r"vocab_size must be a positive integer, got vocab_size=0"),
        (dict(hidden_size=-8), r"hidden_size must be a positive integer, got hidden_size=-8"),
        (dict(num_hidden_layers=0), r"num_hidden_layers must be a positive integer, got num_hidden_layers=0"),
        (dict(num_attention_heads=0), r"num_attention_heads must be a positive integer, got num_attention_heads=0"),
        (dict(intermediate_size=0), r"intermediate_size must be a positive integer, got intermediate_size=0"),
        (dict(max_position_embeddings=-1), r"max_position_embeddings must be a positive integer"),
        (dict(hidden_act="swishy"), r"hidden_act='swishy' is not a known activation; expected one of"),
        (
            dict(head_dim=7, hidden_size=14, num_attention_heads=2),
            r"head_dim must be even with rotary embeddings.*head_dim=7",
        ),
        (
            dict(norm_type="batchnorm"),
            r"norm_type must be one of \('rmsnorm', 'layernorm'\), got norm_type='batchnorm'",
        ),
        (dict(position_embedding_type="alibi"), r"position_embedding_type must be one of .*'alibi'"),
        (dict(norm_position="sandwich"), r"norm_position must be one of .*'sandwich'"),
        (dict(mlp_type="moe"), r"mlp_type must be one of .*'moe'"),
        (dict(attention_dropout=1.5), r"attention_dropout must be in \[0, 1\), got attention_dropout=1.5"),
        (dict(norm_eps=0.0), r"norm_eps must be positive, got norm_eps=0.0"),
        (
            dict(final_logit_softcapping=-30.0),
            r"final_logit_softcapping must be None \(no cap\) or a positive finite number, got "
            r"final_logit_softcapping=-30.0",
        ),
        (dict(final_logit_softcapping=float("inf")), r"final_logit_softcapping=inf"),
    ],
)
def test_invalid_configs_raise_value_error_naming_field_and_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTForgeConfig(**overrides)


def test_odd_head_dim_is_fine_without_rope():
    config = GPTForgeConfig(head_dim=7, hidden_size=14, num_attention_heads=2, position_embedding_type="learned")
    assert config.head_dim == 7


def test_explicit_head_dim_need_not_divide_hidden():
    config = GPTForgeConfig(hidden_size=96, num_attention_heads=4, head_dim=32)
    assert config.head_dim * config.num_attention_heads == 128


def test_invalid_field_in_config_json_is_rejected_on_load(tmp_path):
    GPTForgeConfig.from_preset("tiny").save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["num_key_value_heads"] = 3
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="num_key_value_heads=3 must divide num_attention_heads=4"):
        AutoConfig.from_pretrained(tmp_path)


def test_gpt2_aliases_read_through():
    config = GPTForgeConfig(n_embd=64, n_layer=3, n_head=4)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 3, 4)
    assert config.rms_norm_eps == config.norm_eps
