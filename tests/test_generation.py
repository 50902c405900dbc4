"""`generate` and `pipeline` as with a native causal LM, checked against Transformers' own Llama and a hand loop."""

import os
from pathlib import Path

import pytest
import torch
from _helpers import arch_config
from transformers import LlamaConfig, LlamaForCausalLM, pipeline

from gptforge import GPTForgeForCausalLM, from_transformers, train_tokenizer


@pytest.fixture(scope="module")
def llama_pair():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=127, pad_token_id=1,
    )  # fmt: skip
    reference = LlamaForCausalLM(config).eval()
    return reference, from_transformers(reference)


def hand_greedy(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """The ten-line reference: full forward, argmax, append (no cache, no generate)."""
    for _ in range(steps):
        next_id = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=-1)
    return ids


def test_greedy_generate_equals_hand_loop(llama_pair):
    _, model = llama_pair
    prompt = torch.randint(2, 127, (1, 6))
    out = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert torch.equal(out, hand_greedy(model, prompt, 12))


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(num_beams=3, do_sample=False)], ids=["greedy", "beam"])
def test_generate_matches_transformers_llama(llama_pair, kwargs):
    reference, model = llama_pair
    prompt = torch.randint(2, 127, (2, 5))
    mask = torch.ones_like(prompt)
    expected = reference.generate(prompt, attention_mask=mask, max_new_tokens=10, eos_token_id=None, **kwargs)
    actual = model.generate(prompt, attention_mask=mask, max_new_tokens=10, eos_token_id=None, **kwargs)
    assert torch.equal(actual, expected)


def test_sampling_is_reproducible_with_a_seed(llama_pair):
    _, model = llama_pair
    prompt = torch.randint(2, 127, (1, 4))
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        runs.append(
            model.generate(prompt, do_sample=True, temperature=0.9, top_k=20, max_new_tokens=15, eos_token_id=None)
        )
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(99)
    other = model.generate(prompt, do_sample=True, temperature=0.9, top_k=20, max_new_tokens=15, eos_token_id=None)
    assert not torch.equal(other, runs[0])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(arch):
    model = GPTForgeForCausalLM(arch_config(arch, pad_token_id=0)).eval()
    prompts = [torch.randint(1, 128, (n,)) for n in (7, 3, 5)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :], mask[i, width - len(p) :] = p, 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=None)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=8, do_sample=False, eos_token_id=None)
        assert torch.equal(batched[i, width:], alone[0, len(p) :]), f"row {i}"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_static_cache_generation_equals_dynamic(arch):
    model = GPTForgeForCausalLM(arch_config(arch)).eval()
    prompt = torch.randint(1, 128, (2, 6))
    mask = torch.ones_like(prompt)
    mask[1, :2] = 0
    dynamic = model.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=None)
    static = model.generate(
        prompt,
        attention_mask=mask,
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=None,
        cache_implementation="static",
    )
    assert torch.equal(static, dynamic)


def test_pipeline_text_generation_from_a_folder(tmp_path):
    stdlib = Path(os.__file__).parent
    texts = [p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("[a-c]*.py"))[:20]]
    tokenizer = train_tokenizer(texts, vocab_size=400, model_max_length=64)
    config = arch_config(
        "llama",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPTForgeForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path), device="cpu")
    assert isinstance(generator.model, GPTForgeForCausalLM)
    result = generator("def main(", max_new_tokens=8, do_sample=False)
    text = result[0]["generated_text"]
    assert text.startswith("def main(") and len(text) > len("def main(")


def test_cpu_compile_config_turns_on_compiled_decoding_off_gpu():
    from gptforge import cpu_compile_config

    config = cpu_compile_config()
    assert config._compile_all_devices is True and config.fullgraph and config.mode is None
    assert cpu_compile_config(fullgraph=False).fullgraph is False


@pytest.mark.slow
def test_compiled_static_cache_decoding_equals_eager(llama_pair):
    from gptforge import cpu_compile_config

    _, model = llama_pair
    prompt = torch.randint(2, 127, (1, 8))
    kwargs = dict(max_new_tokens=12, do_sample=False, eos_token_id=None, cache_implementation="static")
    eager = model.generate(prompt, **kwargs)
    compiled = model.generate(prompt, compile_config=cpu_compile_config(), **kwargs)
    assert torch.equal(compiled, eager)
