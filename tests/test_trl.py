"""TRL's `SFTTrainer` (packing, padding-free, its fused LM head) and `DPOTrainer` on a saved folder, with gptforge
installed and without it (remote code only).

TRL's default SFT loss (`loss_type="nll"`; `"chunked_nll"` is its alias) bypasses `GPTForgeForCausalLM.forward`: it
calls the base model (`model.base_model`) and `get_output_embeddings()` directly and projects in tiles. Its loss on a
packed batch must equal the model's own loss on the same batch, which holds only if the base model honours the
restarting `position_ids` of the packed row (tests/test_packing_and_serving_contract.py checks that directly).
"""

import pytest
from _consumers import CORPUS_TEXT, run_python, save_consumer_model

TRL_SCRIPT = r"""
import json, sys
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

folder, corpus, work, out = sys.argv[1:5]
sentences = [s.strip() + "." for s in corpus.split(".") if s.strip()]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
result = {}

def load():
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

common = dict(report_to="none", use_cpu=True, max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
              logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True)
sft = {}
for loss_type in ("chunked_nll", "nll"):
    model = load()
    args = SFTConfig(output_dir=work + "/sft-" + loss_type, packing=True, packing_strategy="bfd", padding_free=True,
                     max_length=48, loss_type=loss_type, **common)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences * 2}),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        model.train()
        fused = trainer.compute_loss(model, dict(batch)).item()  # TRL's fused LM head over the base model
        own = model(**{k: v for k, v in batch.items() if k in ("input_ids", "position_ids", "labels")}).loss.item()
    before = model.lm_head.weight.detach().clone()
    trainer.train()
    sft[loss_type] = {
        "module": type(model).__module__,
        "batch_shape": list(batch["input_ids"].shape),
        "has_mask": "attention_mask" in batch,
        "restarts": int((batch["position_ids"] == 0).sum()),
        "fused": fused,
        "own": own,
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
        "changed": not torch.equal(before, model.lm_head.weight.detach()),
    }
result["sft"] = sft

pairs = [{"prompt": s.split(" ", 2)[0] + " " + s.split(" ", 2)[1], "chosen": " " + s.split(" ", 2)[2],
          "rejected": " the mat."} for s in sentences if len(s.split(" ")) > 3][:8]
policy, reference = load(), load()
args = DPOConfig(output_dir=work + "/dpo", max_length=48, **common)
trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(pairs),
                     processing_class=tokenizer)
ref_before = {k: v.clone() for k, v in reference.state_dict().items()}
trainer.train()
logs = [log for log in trainer.state.log_history if "loss" in log]
result["dpo"] = {
    "module": type(reference).__module__,
    "losses": [log["loss"] for log in logs],
    "reference_frozen": all(torch.equal(v, reference.state_dict()[k]) for k, v in ref_before.items()),
    "first_margin": logs[0].get("rewards/margins"),
}
json.dump(result, open(out, "w"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("hide_gptforge", [False, True], ids=["gptforge", "remote-code"])
def test_sft_packed_padding_free_and_dpo(tmp_path, hide_gptforge):
    folder = tmp_path / "lm"
    save_consumer_model(folder)
    result = run_python(
        TRL_SCRIPT, str(folder), CORPUS_TEXT, str(tmp_path), tmp_path=tmp_path, hide_gptforge=hide_gptforge
    )

    for loss_type, sft in result["sft"].items():
        expected_module = "transformers_modules." if hide_gptforge else "gptforge.modeling"
        assert sft["module"].startswith(expected_module), sft["module"]
        # one packed row per batch, several documents in it, no attention mask: the padding-free layout
        assert sft["batch_shape"][0] == 1 and sft["restarts"] > 1 and not sft["has_mask"], (loss_type, sft)
        assert abs(sft["fused"] - sft["own"]) <= 1e-5, (loss_type, sft)
        assert len(sft["losses"]) == 2 and sft["changed"]
    assert result["sft"]["chunked_nll"]["losses"] == result["sft"]["nll"]["losses"]
    assert abs(result["sft"]["nll"]["losses"][0] - result["sft"]["nll"]["own"]) <= 1e-4

    dpo = result["dpo"]
    assert dpo["module"].startswith("transformers_modules." if hide_gptforge else "gptforge.modeling")
    assert len(dpo["losses"]) == 2 and dpo["reference_frozen"]
    # policy and reference start equal: the first step's loss is exactly -log(sigmoid(0)) = log 2
    assert abs(dpo["losses"][0] - 0.6931) <= 1e-3
