"""TRL's `SFTTrainer` (packing, padding-free, its fused LM head) and `DPOTrainer` on a saved folder, with gptforge
installed and without it (remote code only).

TRL's SFT loss (`loss_type="nll"`; `"chunked_nll"` is its alias) bypasses `GPTForgeForCausalLM.forward`: TRL replaces
the trainer's model's `forward` on the instance, and with `fused_lm_head=True` that calls the base model
(`model.base_model`) and `get_output_embeddings()` directly and projects in tiles of tokens by vocabulary entries. Its
loss on a packed, padding-free row must equal the loss of the same documents each run alone through a separate,
unpatched load of the model: that holds only if the base model keeps the documents of a packed row apart (restarting
`position_ids`, no mask) and TRL's tiles cover the row and the vocabulary. TRL's tiles (4096 tokens by 32768 entries)
would hold this whole row and vocabulary in one, so the script shrinks both so that each row spans several of each.
"""

import pytest
from _consumers import CORPUS_TEXT, run_python, save_consumer_model

# tile sizes for TRL's fused LM head: the packed rows here are ~170 tokens and the vocabulary 320 entries
TOKEN_TILE, VOCAB_TILE = 64, 128

TRL_SCRIPT = r"""
import json, sys
import torch
import trl.kernels.chunked_logprob as chunked_logprob
import trl.trainer.utils as trl_utils
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

folder, corpus, work, token_tile, vocab_tile, out = sys.argv[1:7]
sentences = [s.strip() + "." for s in corpus.split(".") if s.strip()]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
result = {}

# TRL reads both tile sizes from these module globals at each call; count the tiles its torch path folds
assert chunked_logprob.TOKEN_CHUNK_SIZE == 4096 and trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == 32768
chunked_logprob.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = int(token_tile), int(vocab_tile)
tiles = []
fold = chunked_logprob._forward_tile
def counting_fold(tile, *args, **kwargs):
    tiles.append([tile.shape[0], args[9], args[10]])  # tokens, first vocabulary entry, entries
    return fold(tile, *args, **kwargs)
chunked_logprob._forward_tile = counting_fold

def load():
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

def documents_alone_loss(model, batch):
    # the mean next-token loss of each document of the packed row run alone, over the labels the collator kept
    ids, labels, positions = (batch[k][0] for k in ("input_ids", "labels", "position_ids"))
    starts = (positions == 0).nonzero().flatten().tolist() + [len(ids)]
    total, count = 0.0, 0
    with torch.no_grad():
        for start, end in zip(starts[:-1], starts[1:]):
            logits = model(ids[None, start:end]).logits[0, :-1]
            target = labels[start + 1:end]
            total += torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum").item()
            count += int((target != -100).sum())
    return total / count, len(starts) - 1

common = dict(report_to="none", use_cpu=True, max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
              logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True)
sft = {}
for loss_type in ("chunked_nll", "nll"):
    model, reference = load(), load()
    args = SFTConfig(output_dir=work + "/sft-" + loss_type, packing=True, packing_strategy="bfd", padding_free=True,
                     max_length=48, loss_type=loss_type, **common)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences * 2}),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    tiles.clear()
    with torch.no_grad():
        model.train()
        fused = trainer.compute_loss(model, dict(batch)).item()  # TRL's fused LM head over the base model
    fused_tiles = list(tiles)
    reference.eval()
    alone, documents = documents_alone_loss(reference, batch)
    before = model.lm_head.weight.detach().clone()
    trainer.train()
    sft[loss_type] = {
        "module": type(model).__module__,
        # TRL patched the trainer's model on the instance; the reference load is untouched
        "patched": "forward" in vars(model) and "forward" not in vars(reference),
        "batch_shape": list(batch["input_ids"].shape),
        "has_mask": "attention_mask" in batch,
        "documents": documents,
        "fused": fused,
        "fused_tiles": fused_tiles,
        "documents_alone": alone,
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
        TRL_SCRIPT,
        str(folder),
        CORPUS_TEXT,
        str(tmp_path),
        str(TOKEN_TILE),
        str(VOCAB_TILE),
        tmp_path=tmp_path,
        hide_gptforge=hide_gptforge,
    )

    for loss_type, sft in result["sft"].items():
        expected_module = "transformers_modules." if hide_gptforge else "gptforge.modeling"
        assert sft["module"].startswith(expected_module), sft["module"]
        assert sft["patched"], (loss_type, sft)
        # one packed row per batch, several documents in it, no attention mask: the padding-free layout
        assert sft["batch_shape"][0] == 1 and sft["documents"] > 1 and not sft["has_mask"], (loss_type, sft)
        # the fused head ran in tiles: several of tokens, several of vocabulary, together covering the row (its last
        # position predicts nothing) by the whole vocabulary exactly once
        positions = sft["batch_shape"][1] - 1
        token_tiles = [tokens for tokens, first, _ in sft["fused_tiles"] if first == 0]
        vocab_tiles = sorted({(first, entries) for _, first, entries in sft["fused_tiles"]})
        assert positions > TOKEN_TILE and len(token_tiles) == -(-positions // TOKEN_TILE), (loss_type, sft)
        assert sum(token_tiles) == positions, (loss_type, sft)
        assert vocab_tiles == [(0, 128), (128, 128), (256, 64)], (loss_type, sft)
        assert len(sft["fused_tiles"]) == len(token_tiles) * len(vocab_tiles), (loss_type, sft)
        assert abs(sft["fused"] - sft["documents_alone"]) <= 1e-5, (loss_type, sft)
        # the first step's logged loss is the same batch's, through the training path
        assert abs(sft["losses"][0] - sft["documents_alone"]) <= 1e-4, (loss_type, sft)
        assert len(sft["losses"]) == 2 and sft["changed"]
    assert result["sft"]["chunked_nll"]["losses"] == result["sft"]["nll"]["losses"]

    dpo = result["dpo"]
    assert dpo["module"].startswith("transformers_modules." if hide_gptforge else "gptforge.modeling")
    assert len(dpo["losses"]) == 2 and dpo["reference_frozen"]
    # policy and reference start equal: the first step's loss is exactly -log(sigmoid(0)) = log 2
    assert abs(dpo["losses"][0] - 0.6931) <= 1e-3
