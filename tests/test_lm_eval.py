"""lm-evaluation-harness on a saved folder: the local tasks shipped in tests/fixtures/lm_eval (a multiple-choice task,
scored by loglikelihood, and a greedy generation task), with gptforge installed and without it (remote code only).

What must hold: batch size 1 and batch size 4 give the same results (lm-eval pads loglikelihood batches on the right
and generation batches on the left, so this checks that padding changes nothing for real tokens), and lm-eval's
`max_length` is the model's context length, read from `config.n_positions` before `max_position_embeddings`.
"""

import shutil
from pathlib import Path

import pytest
from _consumers import run_python, save_consumer_model

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval"
CONTEXT = 96  # differs from the tokenizer's model_max_length (128): lm-eval must take the config's

LM_EVAL_SCRIPT = r"""
import json, sys
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

folder, out = sys.argv[1:3]
tasks = TaskManager(include_path="lm_eval")
result = {}
for batch_size in (1, 4):
    lm = HFLM(pretrained=folder, trust_remote_code=True, batch_size=batch_size, device="cpu", dtype="float32")
    evaluation = simple_evaluate(model=lm, tasks=["gptforge_mc", "gptforge_gen"], task_manager=tasks,
                                 log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    samples = evaluation["samples"]
    result[str(batch_size)] = {
        "module": type(lm.model).__module__,
        "max_length": lm.max_length,
        "n_positions": lm.model.config.n_positions,
        "metrics": {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                    for task, metrics in evaluation["results"].items()},
        "loglikelihoods": [[resp[0][0] for resp in s["resps"]] for s in samples["gptforge_mc"]],
        "generations": [s["resps"][0][0] for s in samples["gptforge_gen"]],
    }
json.dump(result, open(out, "w"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("hide_gptforge", [False, True], ids=["gptforge", "remote-code"])
def test_local_tasks_at_batch_size_1_and_4(tmp_path, hide_gptforge):
    folder = tmp_path / "lm"
    save_consumer_model(folder, max_position_embeddings=CONTEXT)
    shutil.copytree(FIXTURES, tmp_path / "lm_eval")  # the task YAMLs name their data relative to the working dir
    result = run_python(LM_EVAL_SCRIPT, str(folder), tmp_path=tmp_path, hide_gptforge=hide_gptforge)
    one, four = result["1"], result["4"]

    assert one["module"].startswith("transformers_modules." if hide_gptforge else "gptforge.modeling")
    assert one["max_length"] == four["max_length"] == one["n_positions"] == CONTEXT
    assert len(one["loglikelihoods"]) == 6 and len(one["generations"]) == 5
    for doc_1, doc_4 in zip(one["loglikelihoods"], four["loglikelihoods"], strict=True):
        assert all(value < 0 for value in doc_1) and len(set(doc_1)) == len(doc_1)
        assert doc_4 == pytest.approx(doc_1, abs=1e-4)
    assert four["generations"] == one["generations"]
    assert four["metrics"] == one["metrics"]
    assert set(one["metrics"]["gptforge_mc"]) >= {"acc,none", "acc_norm,none"}
    assert "exact_match,none" in one["metrics"]["gptforge_gen"]
