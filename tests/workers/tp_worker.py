"""Run under `torchrun --nproc_per_node 2`: load a saved model with `tp_plan="auto"` and write what the one-process
reference is compared with (logits, greedy tokens, gradients after one training step) to OUT/tp_rank{rank}.pt.

Usage: torchrun --nproc_per_node 2 tests/workers/tp_worker.py MODEL_DIR OUT_DIR
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

import gptforge  # noqa: F401  (registers the Auto classes)


def main(model_dir: str, out_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir, tp_plan="auto")  # initialises the gloo process group
    rank = dist.get_rank()
    inputs = torch.load(Path(model_dir) / "inputs.pt")
    sharded = sorted(n for n, p in model.named_parameters() if type(p.data).__name__ == "DTensor")
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=inputs).logits
    generated = model.generate(inputs[:, :4], max_new_tokens=6, do_sample=False, pad_token_id=0)
    model.train()
    model.zero_grad()
    loss = model(input_ids=inputs, labels=inputs).loss
    loss.backward()
    grads = {}
    for name, param in model.named_parameters():
        grad = param.grad
        grads[name] = (grad.full_tensor() if hasattr(grad, "full_tensor") else grad).detach().clone()
    torch.save(
        {"logits": logits, "generated": generated, "loss": loss.detach(), "grads": grads, "sharded": sharded},
        Path(out_dir) / f"tp_rank{rank}.pt",
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
