"""The extractive question-answering head: Llama's numbers with Llama's weights, the Auto class, save and load (with
and without gptforge installed), and training through the `Trainer`."""

import json

import torch
from _consumers import run_python
from _helpers import arch_config
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForQuestionAnswering,
    LlamaConfig,
    LlamaForQuestionAnswering,
    Trainer,
    TrainingArguments,
)

from gptforge import GPTForgeConfig, GPTForgeForQuestionAnswering
from gptforge.modeling.conversion import llama_config_to_gptforge

OPEN, CLOSE = 2, 3  # the markers around each answer in the toy span task


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, 120, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    return ids, mask


def test_logits_equal_llamas_with_the_same_weights():
    llama_config = LlamaConfig(
        vocab_size=120, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    llama = LlamaForQuestionAnswering(llama_config).eval()
    model = GPTForgeForQuestionAnswering(llama_config_to_gptforge(llama_config)).eval()
    # the trunk is `transformer` in Llama's QA head, `model` in gptforge's; every other name is the same
    state = {k.replace("transformer.", "model.", 1): v for k, v in llama.state_dict().items()}
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state)

    ids = torch.randint(4, 120, (2, 11))
    starts, ends = torch.tensor([1, 3]), torch.tensor([4, 9])
    ours = model(ids, start_positions=starts, end_positions=ends)
    theirs = llama(ids, start_positions=starts, end_positions=ends)
    assert ours.start_logits.shape == ours.end_logits.shape == (2, 11)
    torch.testing.assert_close(ours.start_logits, theirs.start_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.end_logits, theirs.end_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=0, atol=1e-5)
    expected = (
        torch.nn.functional.cross_entropy(ours.start_logits, starts)
        + torch.nn.functional.cross_entropy(ours.end_logits, ends)
    ) / 2
    torch.testing.assert_close(ours.loss, expected)


def test_auto_class_builds_it_and_a_save_loads_back(tmp_path):
    config = arch_config("gpt2")
    model = AutoModelForQuestionAnswering.from_config(config).eval()
    assert type(model) is GPTForgeForQuestionAnswering
    assert model.get_input_embeddings() is model.model.embed_tokens
    ids, mask = padded_batch()
    expected = model(ids, attention_mask=mask)

    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["GPTForgeForQuestionAnswering"]
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    assert type(loaded) is GPTForgeForQuestionAnswering
    got = loaded(ids, attention_mask=mask)
    assert torch.equal(got.start_logits, expected.start_logits) and torch.equal(got.end_logits, expected.end_logits)
    start, end = model(ids, attention_mask=mask, return_dict=False)  # no loss without positions
    assert torch.equal(start, expected.start_logits) and torch.equal(end, expected.end_logits)


def test_a_causal_lm_checkpoint_starts_a_question_answering_head(tmp_path):
    from gptforge import GPTForgeForCausalLM

    lm = GPTForgeForCausalLM(arch_config("llama")).eval()
    lm.save_pretrained(tmp_path)
    qa = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    assert type(qa) is GPTForgeForQuestionAnswering
    for name, tensor in lm.model.state_dict().items():  # the same `model.` prefix: the trunk loads whole
        assert torch.equal(qa.model.state_dict()[name], tensor), name


LOAD_WITHOUT_GPTFORGE = r"""
import json, sys
from safetensors.torch import load_file, save_file
from transformers import AutoModelForQuestionAnswering

folder, out = sys.argv[1], sys.argv[-1]
model = AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True).eval()
inputs = load_file(folder + "/inputs.safetensors")
output = model(**inputs)
save_file({"start": output.start_logits, "end": output.end_logits}, folder + "/remote.safetensors")
with open(out, "w") as f:
    json.dump({"module": type(model).__module__, "class": type(model).__name__}, f)
"""


def test_loads_as_remote_code_without_gptforge(tmp_path):
    torch.manual_seed(0)
    model = GPTForgeForQuestionAnswering(arch_config("llama")).eval()
    folder = tmp_path / "qa"
    model.save_pretrained(folder)
    ids, mask = padded_batch()
    save_file({"input_ids": ids, "attention_mask": mask}, folder / "inputs.safetensors")

    result = run_python(LOAD_WITHOUT_GPTFORGE, str(folder), tmp_path=tmp_path, hide_gptforge=True)
    assert result["class"] == "GPTForgeForQuestionAnswering"
    assert result["module"].startswith("transformers_modules.")  # the folder's flat code, not the package
    remote = load_file(folder / "remote.safetensors")
    expected = model(ids, attention_mask=mask)
    torch.testing.assert_close(remote["start"], expected.start_logits, rtol=0, atol=0)
    torch.testing.assert_close(remote["end"], expected.end_logits, rtol=0, atol=0)


def span_examples(count: int, length: int = 16) -> list[dict[str, torch.Tensor]]:
    """Random tokens with one answer wrapped in OPEN ... CLOSE; the span to find runs from one marker to the other."""
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(count):
        ids = torch.randint(4, 64, (length,), generator=generator)
        start = int(torch.randint(0, length - 4, (1,), generator=generator))
        end = start + 1 + int(torch.randint(1, min(5, length - start - 1), (1,), generator=generator))
        ids[start], ids[end] = OPEN, CLOSE
        examples.append(dict(input_ids=ids, start_positions=torch.tensor(start), end_positions=torch.tensor(end)))
    return examples


def mean_loss(model: GPTForgeForQuestionAnswering, examples: list[dict[str, torch.Tensor]]) -> float:
    batch = {key: torch.stack([example[key] for example in examples]) for key in examples[0]}
    with torch.no_grad():
        return model.eval()(**batch).loss.item()


def test_trainer_learns_a_toy_span_task(tmp_path):
    torch.manual_seed(0)
    config: GPTForgeConfig = arch_config("llama", vocab_size=64, hidden_size=32, intermediate_size=64)
    model = GPTForgeForQuestionAnswering(config)
    examples = span_examples(48)
    before = mean_loss(model, examples)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        max_steps=40,
        logging_steps=10,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    Trainer(model=model.train(), args=args, train_dataset=examples).train()
    after = mean_loss(model, examples)
    assert before > 2.0  # about log(16) per boundary: chance
    assert after < 0.4 * before, (before, after)
