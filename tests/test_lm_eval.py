"""lm-evaluation-harness on a saved folder: the local tasks shipped in tests/fixtures/lm_eval (a multiple-choice task,
scored by loglikelihood, and a greedy generation task), with gptforge installed and without it (remote code only).

What must hold: lm-eval's numbers are the model's own (each loglikelihood equals the one computed from the model's
logits, each generation equals `model.generate` on the same prompt cut at the task's stop strings), its scores are the
task's metrics over them, batch size 1 and batch size 4 give the same results (lm-eval pads loglikelihood batches on
the right and generation batches on the left, so this checks that padding changes nothing for real tokens), and
lm-eval's `max_length` is the model's context length, read from `config.n_positions` before
`max_position_embeddings`. The model first learns the answers to three of the five generation questions, so its
generations are words rather than whatever a random model says first, and the exact-match score is neither 0 nor 1.
"""

import json
import shutil
import string
from pathlib import Path

import pytest
from _consumers import consumer_tokenizer, fit, run_python, save_consumer_model

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval"
CONTEXT = 96  # differs from the tokenizer's model_max_length (128): lm-eval must take the config's
LEARNED = 3  # the first generation questions the model is taught to answer

LM_EVAL_SCRIPT = r"""
import json, sys
import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, out = sys.argv[1:3]
tasks = TaskManager(include_path="lm_eval")
result = {}
for batch_size in (1, 4):
    lm = HFLM(pretrained=folder, trust_remote_code=True, batch_size=batch_size, device="cpu", dtype="float32")
    evaluation = simple_evaluate(model=lm, tasks=["gptforge_mc", "gptforge_gen"], task_manager=tasks,
                                 log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    samples = {task: sorted(s, key=lambda sample: sample["doc_id"]) for task, s in evaluation["samples"].items()}
    result[str(batch_size)] = {
        "module": type(lm.model).__module__,
        "max_length": lm.max_length,
        "n_positions": lm.model.config.n_positions,
        "metrics": {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                    for task, metrics in evaluation["results"].items()},
        "mc_requests": [list(map(list, s["arguments"])) for s in samples["gptforge_mc"]],
        "loglikelihoods": [[resp[0][0] for resp in s["resps"]] for s in samples["gptforge_mc"]],
        "gen_requests": [[s["arguments"][0][0], s["arguments"][0][1]] for s in samples["gptforge_gen"]],
        "generations": [s["resps"][0][0] for s in samples["gptforge_gen"]],
    }

# the same requests answered by a separate load of the model, without lm-eval
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
eos = tokenizer.decode([model.generation_config.eos_token_id])
loglikelihoods = []
for requests in result["1"]["mc_requests"]:
    values = []
    for context, continuation in requests:
        context_ids = tokenizer(context)["input_ids"]
        ids = tokenizer(context + continuation)["input_ids"]
        with torch.no_grad():
            logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        values.append(sum(logprobs[i - 1, ids[i]].item() for i in range(len(context_ids), len(ids))))
    loglikelihoods.append(values)
generations = []
for context, kwargs in result["1"]["gen_requests"]:
    ids = torch.tensor([tokenizer(context)["input_ids"]])
    new = model.generate(ids, max_new_tokens=kwargs["max_gen_toks"], do_sample=False)[0, ids.shape[1]:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    for stop in kwargs["until"] + [eos]:
        text = text.split(stop)[0]
    generations.append(text)
result["model"] = {"loglikelihoods": loglikelihoods, "generations": generations}
json.dump(result, open(out, "w"))
"""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def save_model_that_answers(folder: Path) -> None:
    """The consumer model, taught the answers to the first `LEARNED` generation questions (~0.3 s)."""
    model = save_consumer_model(folder, max_position_embeddings=CONTEXT)
    tokenizer = consumer_tokenizer()
    docs = read_jsonl(FIXTURES / "gptforge_gen.jsonl")[:LEARNED]
    rows = [tokenizer(f"question: {doc['question']} answer: {doc['answer']}.")["input_ids"] for doc in docs]
    fit(model, rows, epochs=30).save_pretrained(folder)


def expected_scores(loglikelihoods: list[list[float]], generations: list[str]) -> dict[str, dict[str, float]]:
    """The tasks' metrics as their YAMLs define them: accuracy of the most likely choice (acc_norm: per character of
    the choice), and exact match with the target ' {answer}' ignoring case and punctuation."""
    mc, gen = read_jsonl(FIXTURES / "gptforge_mc.jsonl"), read_jsonl(FIXTURES / "gptforge_gen.jsonl")

    def best(values: list[float]) -> int:
        return max(range(len(values)), key=values.__getitem__)

    def normal(text: str) -> str:
        return text.lower().translate(str.maketrans("", "", string.punctuation))

    acc = [best(lls) == doc["answer"] for lls, doc in zip(loglikelihoods, mc, strict=True)]
    per_char = [
        [ll / len(c) for ll, c in zip(lls, doc["choices"], strict=True)] for lls, doc in zip(loglikelihoods, mc)
    ]
    acc_norm = [best(lls) == doc["answer"] for lls, doc in zip(per_char, mc, strict=True)]
    exact = [normal(g) == normal(" " + doc["answer"]) for g, doc in zip(generations, gen, strict=True)]
    return {
        "gptforge_mc": {"acc,none": sum(acc) / len(acc), "acc_norm,none": sum(acc_norm) / len(acc_norm)},
        "gptforge_gen": {"exact_match,none": sum(exact) / len(exact)},
    }


@pytest.mark.slow
@pytest.mark.parametrize("hide_gptforge", [False, True], ids=["gptforge", "remote-code"])
def test_local_tasks_at_batch_size_1_and_4(tmp_path, hide_gptforge):
    folder = tmp_path / "lm"
    save_model_that_answers(folder)
    shutil.copytree(FIXTURES, tmp_path / "lm_eval")  # the task YAMLs name their data relative to the working dir
    result = run_python(LM_EVAL_SCRIPT, str(folder), tmp_path=tmp_path, hide_gptforge=hide_gptforge)
    one, four, model = result["1"], result["4"], result["model"]

    assert one["module"].startswith("transformers_modules." if hide_gptforge else "gptforge.modeling")
    assert one["max_length"] == four["max_length"] == one["n_positions"] == CONTEXT
    assert len(one["loglikelihoods"]) == 6 and len(one["generations"]) == 5
    for doc_1, doc_4, own in zip(one["loglikelihoods"], four["loglikelihoods"], model["loglikelihoods"], strict=True):
        assert all(value < 0 for value in doc_1) and len(set(doc_1)) == len(doc_1)
        assert doc_1 == pytest.approx(own, abs=1e-4)
        assert doc_4 == pytest.approx(doc_1, abs=1e-4)
    # every generation is text, the model's own greedy continuation; the learned answers come back word for word
    assert all(generation.strip() for generation in one["generations"]), one["generations"]
    assert one["generations"] == model["generations"]
    answers = [doc["answer"] for doc in read_jsonl(FIXTURES / "gptforge_gen.jsonl")]
    assert one["generations"][:LEARNED] == [" " + answer for answer in answers[:LEARNED]]
    assert four["generations"] == one["generations"]

    want = expected_scores(model["loglikelihoods"], model["generations"])
    for task, scores in want.items():
        assert {name: one["metrics"][task][name] for name in scores} == pytest.approx(scores, abs=1e-9), task
    assert 0 < want["gptforge_gen"]["exact_match,none"] < 1
    assert four["metrics"] == one["metrics"]
