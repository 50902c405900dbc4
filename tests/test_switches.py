"""The switches of the small-model training recipes (modded-nanogpt's speedrun, nanochat): each one decodes with the
cache as a full forward does, batches left-padded rows as they run alone, trains, saves and loads, and either
exports to the native class that holds it exactly or is refused by name."""

import json

import pytest
import torch
from _consumers import run_python
from _helpers import arch_config, left_padded

from gptforge import GPTForgeForCausalLM
from gptforge.modeling.conversion import (
    EXPORTABLE_RECIPE_HINT,
    from_transformers,
    gptforge_config_to_native,
    to_transformers,
)

# switch -> (architecture of tests/_helpers.py, config overrides)
SWITCHES: dict[str, tuple[str, dict]] = {
    "relu2-gated": ("llama", dict(hidden_act="relu2")),
    "relu2-plain": ("gpt2", dict(hidden_act="relu2")),
    "zero-init": ("llama", dict(zero_init=True)),
    "softcap": ("llama", dict(final_logit_softcapping=2.0)),
    "shortcut": ("llama", dict(embedding_shortcut=True)),
    "shortcut-learned-positions": ("gpt2", dict(embedding_shortcut=True)),
    "qk-norm": ("llama", dict(qk_norm=True)),
    "qk-norm-layernorm": ("gpt2", dict(qk_norm=True)),
}
# switch -> the native class `to_transformers` gives (None: refused, naming the field in the message)
EXPORTS: dict[str, str | None] = {
    "relu2-gated": "LlamaForCausalLM",
    "relu2-plain": "GPT2LMHeadModel",
    "zero-init": "LlamaForCausalLM",  # an initialisation only: the forward is Llama's
    "softcap": None,
    "shortcut": None,
    "shortcut-learned-positions": None,
    "qk-norm": "Qwen3ForCausalLM",  # Llama's block with QK-norm is Qwen3's
    "qk-norm-layernorm": None,
}
NAMES = sorted(SWITCHES)


def switch_config(name: str, **overrides):
    arch, switch = SWITCHES[name]
    return arch_config(arch, **{**switch, **overrides})


@torch.no_grad()
def perturb(model: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Noise on every parameter, so that no switch sits at its neutral initial value (a scalar at 1 or 0, a norm
    weight of ones, a zero projection) where a wrong computation would still give the right numbers."""
    for param in model.parameters():
        param.add_(torch.randn_like(param) * std)
    return model


def switched_lm(name: str, **overrides) -> GPTForgeForCausalLM:
    return perturb(GPTForgeForCausalLM(switch_config(name, **overrides))).eval()


@pytest.mark.parametrize("name", NAMES)
def test_token_by_token_decoding_with_cache_equals_full_forward(name):
    model = switched_lm(name)
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)
        steps = [out.logits]
        for t in range(5, 12):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_left_padded_batch_equals_each_row_alone(name):
    model = switched_lm(name)
    rows = [torch.randint(0, 128, (n,)) for n in (9, 5, 7)]
    ids, mask = left_padded(rows)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            torch.testing.assert_close(batched[i, -len(row) :], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_a_few_training_steps_move_every_parameter(name):
    model = GPTForgeForCausalLM(switch_config(name)).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 128, (4, 16))
    losses = []
    for _ in range(3):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    unmoved = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert unmoved == []


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_back_the_switch_and_the_logits(name, tmp_path):
    model = switched_lm(name)
    model.save_pretrained(tmp_path)
    loaded = GPTForgeForCausalLM.from_pretrained(tmp_path).eval()
    config = {k: v for k, v in loaded.config.to_dict().items() if k != "_name_or_path"}
    assert config == {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_export_maps_to_the_native_class_that_holds_it_or_refuses_naming_it(name):
    model = switched_lm(name)
    native_name = EXPORTS[name]
    if native_name is None:
        field = next(iter(SWITCHES[name][1]))
        with pytest.raises(ValueError, match=rf"{field}=.*\(needs "):
            gptforge_config_to_native(model.config)
        return
    native = to_transformers(model)
    assert type(native).__name__ == native_name
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(native(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
        back = from_transformers(native)
        if name != "zero-init":  # an initialisation leaves no trace in the weights' native config
            for field, value in SWITCHES[name][1].items():
                assert getattr(back.config, field) == value
        torch.testing.assert_close(back(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tied", [False, True])
def test_zero_init_zeroes_the_output_projections_and_an_untied_head_only(tied):
    model = GPTForgeForCausalLM(switch_config("zero-init", tie_word_embeddings=tied))
    zeroed = {k for k, v in model.named_parameters() if v.dim() == 2 and not v.any()}
    expected = {f"model.layers.{i}.{p}.weight" for i in range(2) for p in ("self_attn.o_proj", "mlp.down_proj")}
    if not tied:
        expected.add("lm_head.weight")
    assert zeroed == expected
    assert model.model.embed_tokens.weight.std() > 0.01
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    plain = GPTForgeForCausalLM(switch_config("zero-init", zero_init=False))
    assert not any(not v.any() for v in plain.parameters() if v.dim() == 2)


def test_softcapping_caps_the_logits_of_forward_and_generate():
    capped = switched_lm("softcap")
    plain = GPTForgeForCausalLM(switch_config("softcap", final_logit_softcapping=None)).eval()
    plain.load_state_dict(capped.state_dict())
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        raw = plain(ids).logits
        assert raw.abs().max() > 4.0  # the cap (2.0) bites
        torch.testing.assert_close(capped(ids).logits, 2.0 * torch.tanh(raw / 2.0))
        out = capped.generate(ids, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert all(step.abs().max() <= 2.0 for step in out.logits)


def test_the_chunked_loss_equals_the_plain_loss_with_softcapping_in_values_and_gradients():
    model = perturb(GPTForgeForCausalLM(switch_config("softcap", loss_chunk_size=8))).train()
    ids = torch.randint(0, 128, (2, 12))
    labels = ids.clone()
    labels[0, :3] = -100
    results = {}
    for rows in (8, 0):  # 8: three chunks of the chunked loss; 0: the plain head and loss
        model.config.loss_chunk_size = rows
        model.zero_grad()
        out = model(ids, labels=labels)
        assert (out.logits is None) == (rows != 0)
        out.loss.backward()
        results[rows] = (out.loss.detach(), {k: v.grad.clone() for k, v in model.named_parameters()})
    torch.testing.assert_close(results[8][0], results[0][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[8][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan")])
def test_softcapping_must_be_a_positive_finite_number(value):
    with pytest.raises(ValueError, match=rf"final_logit_softcapping={value!r}"):
        switch_config("softcap", final_logit_softcapping=value)


def test_the_embedding_shortcut_starts_as_the_plain_model():
    model = GPTForgeForCausalLM(switch_config("shortcut")).eval()
    assert model.model.resid_lambdas.shape == model.model.x0_lambdas.shape == (2,)
    assert model.model.resid_lambdas.tolist() == [1.0, 1.0] and model.model.x0_lambdas.tolist() == [0.0, 0.0]
    plain = GPTForgeForCausalLM(switch_config("shortcut", embedding_shortcut=False)).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == ["model.resid_lambdas", "model.x0_lambdas"]
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, atol=0, rtol=0)
        model.model.x0_lambdas.fill_(0.5)
        assert not torch.allclose(model(ids).logits, plain(ids).logits)


def test_the_embedding_shortcut_under_gradient_checkpointing_gives_the_same_gradients():
    model = perturb(GPTForgeForCausalLM(switch_config("shortcut"))).train()
    ids = torch.randint(0, 128, (2, 12))
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable()
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        grads.append({k: v.grad.clone() for k, v in model.named_parameters()})
    assert grads[0]["model.x0_lambdas"].abs().min() > 0 and grads[0]["model.resid_lambdas"].abs().min() > 0
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_qk_norm_is_qwen3s_per_head_norm():
    model = GPTForgeForCausalLM(switch_config("qk-norm"))
    attention = model.model.layers[0].self_attn
    assert attention.q_norm.weight.shape == attention.k_norm.weight.shape == (model.config.head_dim,)
    assert attention.q_norm.variance_epsilon == model.config.norm_eps
    assert GPTForgeForCausalLM(switch_config("qk-norm", qk_norm=False)).model.layers[0].self_attn.q_norm is None


def test_a_qwen3_model_converts_in_with_equal_logits():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=64,
    )
    native = perturb(Qwen3ForCausalLM(config)).eval()
    model = from_transformers(native)
    assert model.config.qk_norm and model.config.head_dim == 32
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, native(ids).logits, atol=1e-4, rtol=1e-4)
    config.use_sliding_window = True
    with pytest.raises(ValueError, match=r"use_sliding_window=True"):
        from_transformers(Qwen3ForCausalLM(config))


def test_gguf_export_refuses_qk_norm_by_name():
    from gptforge.export_gguf import gguf_architecture

    with pytest.raises(ValueError, match=r"qk_norm=True \(needs False") as caught:
        gguf_architecture(switch_config("qk-norm"))
    assert str(caught.value).endswith(EXPORTABLE_RECIPE_HINT)  # and names a recipe whose model keeps the export


ALL_SWITCHES = dict(
    qk_norm=True, hidden_act="relu2", zero_init=True, final_logit_softcapping=2.0, embedding_shortcut=True
)

REMOTE_LOAD = r"""
import json, sys
from transformers import AutoModelForCausalLM

folder, ids, *switches, out = sys.argv[1:]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
ids = torch.tensor(json.loads(ids))
with torch.no_grad():
    logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=4, do_sample=False)
json.dump({
    "module": type(model).__module__,
    "logits": logits.tolist(),
    "generated": generated.tolist(),
    "switches": {k: getattr(model.config, k) for k in switches},
}, open(out, "w"))
"""


@pytest.mark.slow  # a fresh interpreter importing Transformers: ~15 s
def test_a_model_with_every_switch_loads_as_remote_code_without_gptforge(tmp_path):
    model = perturb(GPTForgeForCausalLM(arch_config("llama", **ALL_SWITCHES))).eval()
    model.save_pretrained(tmp_path / "model")
    ids = torch.randint(0, 128, (2, 6))
    with torch.no_grad():
        logits = model(ids).logits
        generated = model.generate(ids, max_new_tokens=4, do_sample=False)
    result = run_python(
        REMOTE_LOAD,
        str(tmp_path / "model"),
        json.dumps(ids.tolist()),
        *ALL_SWITCHES,
        tmp_path=tmp_path,
        hide_gptforge=True,
    )
    assert result["module"].startswith("transformers_modules.")
    assert result["switches"] == ALL_SWITCHES
    torch.testing.assert_close(torch.tensor(result["logits"]), logits, atol=1e-5, rtol=1e-5)
    assert result["generated"] == generated.tolist()


def test_the_model_card_lists_every_switch(tmp_path):
    from gptforge.model_card import model_card

    GPTForgeForCausalLM(arch_config("llama", **ALL_SWITCHES)).save_pretrained(tmp_path)
    card = model_card(tmp_path, repo_id="me/switches")
    row = next(line for line in card.splitlines() if line.startswith("| training-recipe switches |"))
    for words in (
        "QK-norm",
        "zero-initialised output projections and head",
        "softcapped at 2.0",
        "embedding shortcut",
    ):
        assert words in row
    assert "| MLP | gated, relu2," in card
    assert "| exact native Transformers model | none" in card
