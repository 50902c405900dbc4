"""Native behaviour where Transformers' own model tests look: attentions under every backend, every RoPE type with
Llama's numbers, the config's save/load round trip, and `output_loading_info`."""

import json

import pytest
import torch
from _helpers import ARCHITECTURES, arch_config, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, LlamaForCausalLM

from gptforge import (
    GPTForgeConfig,
    GPTForgeForCausalLM,
    GPTForgeForQuestionAnswering,
    GPTForgeForSequenceClassification,
    GPTForgeForTokenClassification,
    GPTForgeModel,
    from_transformers,
    remote_code,
)

ARCHS = sorted(ARCHITECTURES)


def config_for(arch: str, **overrides) -> GPTForgeConfig:
    if arch == "encoder":  # the bidirectional post-norm encoder
        return arch_config("postnorm-causal", is_causal=False, **overrides)
    return arch_config(arch, **overrides)


def padded_batch(width: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 128, (2, width))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second row
    return ids, mask


# --------------------------------------------------------------------------------------------------------------------
# output_attentions / output_hidden_states / return_dict
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS + ["encoder"])
@pytest.mark.parametrize("impl", ["sdpa", "flex_attention"])
def test_attentions_under_any_backend_equal_eagers(arch, impl):
    config = config_for(arch)
    eager = GPTForgeForCausalLM._from_config(config, attn_implementation="eager").eval()
    other = GPTForgeForCausalLM._from_config(config, attn_implementation=impl).eval()
    other.load_state_dict(eager.state_dict())
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = eager(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        actual = other(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert other.config._attn_implementation == impl  # the eager fallback is per call; the model keeps its backend
    heads = config.num_attention_heads
    assert len(actual.attentions) == config.num_hidden_layers
    assert all(a.shape == (2, heads, 10, 10) for a in actual.attentions)
    for got, want in zip(actual.attentions, expected.attentions, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(actual.hidden_states, expected.hidden_states, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(actual.logits, expected.logits)
    # the padded row's real tokens attend to no padding; a causal row to no later position
    assert torch.all(actual.attentions[0][1, :, 3:, :3] == 0)
    if config.is_causal:
        assert torch.all(actual.attentions[0][0].triu(1) == 0)


def test_attentions_of_a_cached_decoding_step_under_sdpa_equal_eagers():
    config = arch_config("llama")
    eager = GPTForgeForCausalLM._from_config(config, attn_implementation="eager").eval()
    sdpa = GPTForgeForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 128, (2, 9))
    steps = {}
    for name, model in (("eager", eager), ("sdpa", sdpa)):
        prefix = model(ids[:, :8], use_cache=True)
        steps[name] = model(ids[:, 8:], cache=prefix.cache, output_attentions=True)
    assert all(a.shape == (2, 4, 1, 9) for a in steps["sdpa"].attentions)
    for got, want in zip(steps["sdpa"].attentions, steps["eager"].attentions, strict=True):
        assert torch.equal(got, want)


def test_output_attentions_from_the_config_and_in_every_head():
    config = arch_config("llama", output_attentions=True, output_hidden_states=True, num_labels=3)
    ids, mask = padded_batch()
    heads = (GPTForgeForSequenceClassification, GPTForgeForTokenClassification, GPTForgeForQuestionAnswering)
    for cls in (GPTForgeModel, GPTForgeForCausalLM, *heads):
        model = cls._from_config(config, attn_implementation="sdpa").eval()
        out = model(ids, attention_mask=mask)
        assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 10, 10), cls.__name__
        assert len(out.hidden_states) == 3, cls.__name__
        assert model(ids, attention_mask=mask, output_attentions=False).attentions is None, cls.__name__


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_are_each_blocks_input_and_the_normed_output(arch):
    model = GPTForgeForCausalLM(arch_config(arch)).eval()  # sdpa: without a mask, its causal kernel
    ids = torch.randint(0, 128, (2, 7))
    out = model(ids, output_hidden_states=True)
    trunk = model.model
    positions = torch.arange(7)[None]
    x = trunk.embed_tokens(ids)
    rope = None
    if trunk.config.position_embedding_type == "learned":
        x = x + trunk.embed_positions(positions)
    else:
        rope = trunk.rotary_emb(x, positions)
    expected = [x]
    for layer in trunk.layers:
        expected.append(layer(expected[-1], position_embeddings=rope))
    expected[-1] = trunk.norm(expected[-1])
    assert len(out.hidden_states) == len(expected)
    for got, want in zip(out.hidden_states, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(out.hidden_states[-1], trunk(ids).last_hidden_state)


def test_tuple_outputs_are_the_dict_outputs_in_order():
    model = GPTForgeForCausalLM(arch_config("llama")).eval()
    ids = torch.randint(0, 128, (2, 6))
    kwargs = dict(labels=ids, output_hidden_states=True, output_attentions=True)
    as_dict = model(ids, **kwargs)
    as_tuple = model(ids, return_dict=False, **kwargs)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 5  # loss, logits, cache, hidden states, attentions
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)
    assert isinstance(as_tuple[2], DynamicCache)
    for got, want in zip(as_tuple[3] + as_tuple[4], as_dict.hidden_states + as_dict.attentions, strict=True):
        assert torch.equal(got, want)
    # the config's default, the trunk alone, and a head without a cache
    trunk_tuple = model.model(ids, use_cache=False, return_dict=False)
    assert len(trunk_tuple) == 1 and torch.equal(trunk_tuple[0], model.model(ids).last_hidden_state)
    logits = model(ids).logits  # (sdpa: output_attentions above ran the eager computation)
    model.config.return_dict = False
    assert torch.equal(model(ids, use_cache=False)[0], logits)
    token_head = GPTForgeForTokenClassification(arch_config("llama", num_labels=3)).eval()
    assert len(token_head(ids, labels=torch.zeros_like(ids), return_dict=False)) == 2  # loss, logits


# --------------------------------------------------------------------------------------------------------------------
# RoPE: every type Llama supports, with Llama's numbers
# --------------------------------------------------------------------------------------------------------------------

ORIGINAL_CONTEXT = 16  # original_max_position_embeddings where the type has one
MAX_POSITIONS = 32  # max_position_embeddings: dynamic's original context
LONG = 48  # past both
ROPE_TYPES = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": ORIGINAL_CONTEXT},
    "longrope": {
        "rope_type": "longrope",
        "short_factor": [1.0 + 0.1 * i for i in range(8)],  # head_dim / 2 of each
        "long_factor": [2.0 + 0.25 * i for i in range(8)],
        "original_max_position_embeddings": ORIGINAL_CONTEXT,
    },
    "proportional": {"rope_type": "proportional", "factor": 2.0, "partial_rotary_factor": 0.5},
    "llama3": {
        "rope_type": "llama3",
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": ORIGINAL_CONTEXT,
    },
}


def llama_with_rope(rope_type: str) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=120,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters={**ROPE_TYPES[rope_type], "rope_theta": 500.0},
        bos_token_id=0,
        eos_token_id=1,
    )
    return LlamaForCausalLM(config).eval()


def test_every_rope_type_of_transformers_llama_is_covered():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    assert set(ROPE_TYPES) == set(ROPE_INIT_FUNCTIONS) | {"default"}


@pytest.mark.parametrize("rope_type", sorted(ROPE_TYPES))
def test_rope_logits_equal_llamas_past_the_original_context(rope_type):
    reference = llama_with_rope(rope_type)
    model = from_transformers(reference)
    assert model.config.rope_parameters["rope_type"] == rope_type
    ids = torch.randint(0, 120, (2, LONG))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=1e-6)
        # the frequencies the forward ended with (dynamic and longrope change them past the original context)
        ours, theirs = model.model.rotary_emb, reference.model.rotary_emb
        torch.testing.assert_close(ours.inv_freq, theirs.inv_freq, rtol=0, atol=0)
        assert ours.attention_scaling == theirs.attention_scaling
        if rope_type in ("dynamic", "longrope"):
            assert not torch.equal(ours.inv_freq, ours.original_inv_freq)
        # and back within the original context (dynamic returns to its original frequencies)
        short = ids[:, :12]
        torch.testing.assert_close(model(short).logits, reference(short).logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.inv_freq, theirs.inv_freq, rtol=0, atol=0)


@pytest.mark.parametrize("rope_type", sorted(ROPE_TYPES))
def test_rope_cached_decoding_equals_llamas_past_the_original_context(rope_type):
    reference = llama_with_rope(rope_type)
    model = from_transformers(reference)
    ids = torch.randint(0, 120, (2, LONG))
    prefix = 12  # within the original context; the steps cross it
    logits = {}
    with torch.no_grad():
        for name, m in (("gptforge", model), ("llama", reference)):
            out = m(ids[:, :prefix], cache=DynamicCache(config=m.config), use_cache=True)
            steps = [out.logits]
            for t in range(prefix, LONG):
                out = m(ids[:, t : t + 1], cache=out.cache, use_cache=True)
                steps.append(out.logits)
            logits[name] = torch.cat(steps, dim=1)
    torch.testing.assert_close(logits["gptforge"], logits["llama"], rtol=0, atol=1e-6)


def test_rope_greedy_generation_equals_llamas_past_the_original_context():
    reference = llama_with_rope("dynamic")
    model = from_transformers(reference)
    prompt = torch.randint(2, 120, (1, 10))
    kwargs = dict(max_new_tokens=LONG - 10, min_new_tokens=LONG - 10, do_sample=False, pad_token_id=1)
    kwargs.update(output_logits=True, return_dict_in_generate=True)
    ours, theirs = model.generate(prompt, **kwargs), reference.generate(prompt, **kwargs)
    assert torch.equal(ours.sequences, theirs.sequences)
    torch.testing.assert_close(torch.stack(ours.logits), torch.stack(theirs.logits), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# the config's save/load round trip (ConfigTester's checks)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", GPTForgeConfig.list_presets())
def test_config_round_trips_exactly_with_auto_map_written(tmp_path, preset):
    config = GPTForgeConfig.from_preset(preset, num_labels=3)
    before = config.to_dict()
    config.save_pretrained(tmp_path)
    assert config.to_dict() == before  # saving changes nothing on the config
    assert GPTForgeConfig.from_pretrained(tmp_path).to_dict() == before
    # the folder still loads without gptforge: config.json names the flat code files
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == remote_code.model_auto_map()

    config.save_pretrained(tmp_path / "outer" / "sub")
    assert GPTForgeConfig.from_pretrained(tmp_path / "outer", subfolder="sub").to_dict() == before
    config.to_json_file(tmp_path / "alone.json")
    assert GPTForgeConfig.from_json_file(tmp_path / "alone.json").to_dict() == before
    with pytest.raises(OSError):
        GPTForgeConfig.from_pretrained(f".{tmp_path}")


def test_a_loaded_config_keeps_the_auto_map_of_its_file(tmp_path):
    GPTForgeConfig().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["auto_map"]["AutoModel"] = "other/repo--modeling_gptforge.GPTForgeModel"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert GPTForgeConfig.from_pretrained(tmp_path).auto_map == saved["auto_map"]


def test_an_invalid_config_file_is_named_once(tmp_path):
    GPTForgeConfig().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["num_key_value_heads"] = 5
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'config.json'}: num_key_value_heads=5 must divide"):
        GPTForgeConfig.from_pretrained(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# output_loading_info
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def mismatching_folder(tmp_path):
    """A saved causal LM with one trunk tensor dropped and one unknown tensor added: (folder, original model)."""
    model = GPTForgeForCausalLM(arch_config("llama")).eval()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("model.layers.0.mlp.up_proj.weight")
    state["model.layers.7.extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path, model


@pytest.mark.parametrize("loader", [GPTForgeForCausalLM, AutoModelForCausalLM])
def test_output_loading_info_reports_what_did_not_match_instead_of_raising(mismatching_folder, loader):
    folder, original = mismatching_folder
    with pytest.raises(ValueError, match=r"1 tensor\(s\) missing from the checkpoint"):
        loader.from_pretrained(folder)  # strict stays the default
    model, info = loader.from_pretrained(folder, output_loading_info=True)
    assert isinstance(model, GPTForgeForCausalLM)
    assert set(info["missing_keys"]) == {"model.layers.0.mlp.up_proj.weight"}
    assert set(info["unexpected_keys"]) == {"model.layers.7.extra.weight"}
    assert not info["mismatched_keys"] and not info["error_msgs"]
    # everything that matched was loaded
    loaded = model.state_dict()
    for name, tensor in original.state_dict().items():
        if name != "model.layers.0.mlp.up_proj.weight":
            assert torch.equal(loaded[name], tensor), name


def test_output_loading_info_lists_shape_mismatches_when_they_are_ignored(mismatching_folder):
    folder, _ = mismatching_folder
    state = load_file(folder / "model.safetensors")
    state["model.norm.weight"] = torch.ones(3)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    # as in Transformers a RuntimeError (what code written for any model catches), and a ValueError naming the folder
    with pytest.raises(RuntimeError, match="tensor shapes in the checkpoint do not match its config.json") as caught:
        GPTForgeForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert isinstance(caught.value, ValueError) and str(caught.value).startswith(str(folder))
    _, info = GPTForgeForCausalLM.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True)
    assert [name for name, *_ in info["mismatched_keys"]] == ["model.norm.weight"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # untied and tied heads
def test_a_complete_folder_reports_nothing_missing(tmp_path, arch):
    GPTForgeForCausalLM(tiny_config("tiny") if arch == "llama" else arch_config("gpt2")).save_pretrained(tmp_path)
    _, info = GPTForgeForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
