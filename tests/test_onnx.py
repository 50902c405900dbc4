"""ONNX: `torch.onnx.export(..., dynamo=True)` of a causal LM, run with onnxruntime, with gptforge installed and without
it (the exported model loaded through remote code).

Two graphs, both with dynamic batch and length: a prefill (input_ids, attention_mask -> logits and the key/value
cache) and a decoding step (one token, the mask, its position and the cache -> logits and the grown cache). Greedy
decoding driven by onnxruntime over a left-padded batch of two gives the tokens of `generate`, and its logits those of
eager PyTorch (bound `ATOL`, measured at 1.5e-7 on these logits of magnitude ~1).
"""

import pytest
from _consumers import run_python, save_consumer_model

ATOL = 1e-5
NEW_TOKENS = 5

ONNX_SCRIPT = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache

folder, new_tokens, work, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
layers = model.config.num_hidden_layers


def flat_cache(cache):
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


class Prefill(torch.nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask):
        output = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        return (output.logits, *flat_cache(output.cache))


class DecodeStep(torch.nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = DynamicCache(config=self.lm.config)
        for index in range(layers):
            cache.update(past[2 * index], past[2 * index + 1], index)
        output = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=True)
        return (output.logits, *flat_cache(output.cache))


pad = model.config.pad_token_id
ids = torch.tensor([[pad, pad, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])  # left-padded batch of two
mask = (torch.arange(6) >= torch.tensor([[2], [0]])).long()
batch, length = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("length", min=2, max=120)
total, past_length = torch.export.Dim("total", min=2, max=128), torch.export.Dim("past", min=1, max=127)
torch.onnx.export(Prefill(model), (ids, mask), work + "/prefill.onnx", dynamo=True,
                  input_names=["input_ids", "attention_mask"],
                  dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}})
with torch.no_grad():
    example = Prefill(model)(ids, mask)
step_mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
step = (ids[:, -1:], step_mask, step_mask.sum(-1, keepdim=True) - 1, *example[1:])
names = ["input_ids", "attention_mask", "position_ids"] + [f"past_{i}" for i in range(2 * layers)]
torch.onnx.export(DecodeStep(model), step, work + "/decode.onnx", dynamo=True, input_names=names,
                  dynamic_shapes=({0: batch}, {0: batch, 1: total}, {0: batch},
                                  tuple({0: batch, 2: past_length} for _ in range(2 * layers))))

prefill = ort.InferenceSession(work + "/prefill.onnx", providers=["CPUExecutionProvider"])
decode = ort.InferenceSession(work + "/decode.onnx", providers=["CPUExecutionProvider"])
logits, *past = prefill.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
with torch.no_grad():
    eager = model(input_ids=ids, attention_mask=mask).logits
real = mask.bool()
prefill_error = (torch.from_numpy(logits)[real] - eager[real]).abs().max().item()

tokens, step_errors, running_mask, running_ids = [], [], mask.numpy(), ids
next_token = logits[:, -1].argmax(-1)[:, None]
for _ in range(new_tokens):
    tokens.append(next_token[:, 0].tolist())
    running_ids = torch.cat([running_ids, torch.from_numpy(next_token)], 1)
    running_mask = np.concatenate([running_mask, np.ones((2, 1), dtype=running_mask.dtype)], 1)
    positions = running_mask.sum(-1, keepdims=True) - 1
    logits, *past = decode.run(None, dict(zip(names, [next_token, running_mask, positions, *past])))
    with torch.no_grad():
        eager_step = model(input_ids=running_ids, attention_mask=torch.from_numpy(running_mask)).logits[:, -1]
    step_errors.append((torch.from_numpy(logits[:, -1]) - eager_step).abs().max().item())
    next_token = logits[:, -1].argmax(-1)[:, None]
generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=pad)[:, ids.shape[1]:]

json.dump({"module": type(model).__module__, "prefill_error": prefill_error, "step_errors": step_errors,
           "onnx_tokens": [list(t) for t in zip(*tokens)], "generate_tokens": generated.tolist(),
           "cache_length": past[0].shape[2], "logit_scale": eager[real].abs().max().item()}, open(out, "w"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("hide_gptforge", [False, True], ids=["gptforge", "remote-code"])
def test_onnx_export_matches_eager_and_decodes_with_its_cache(tmp_path, hide_gptforge):
    folder = tmp_path / "lm"
    save_consumer_model(folder)
    result = run_python(
        ONNX_SCRIPT, str(folder), str(NEW_TOKENS), str(tmp_path), tmp_path=tmp_path, hide_gptforge=hide_gptforge
    )
    assert result["module"].startswith("transformers_modules." if hide_gptforge else "gptforge.modeling")
    assert result["logit_scale"] > 0.1  # the bound below is small against the logits, not against zeros
    assert result["prefill_error"] <= ATOL
    assert len(result["step_errors"]) == NEW_TOKENS and max(result["step_errors"]) <= ATOL
    assert result["onnx_tokens"] == result["generate_tokens"]
    assert result["cache_length"] == 6 + NEW_TOKENS
