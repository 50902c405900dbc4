"""Train a tiny gptforge model with `GPTForgeTrainer` for a few steps, with Transformers' own `fsdp` arguments when
run under `torchrun` (FSDP2, one unit per decoder block) and without when run as one process, and write the per-step
losses, the final weights, and how often each hand-written autograd path ran to OUT/result_{rank}.json / .pt.

Usage: [torchrun --nproc_per_node 2] tests/workers/fsdp_trainer_worker.py OUT GLOBAL_BATCH STEPS
"""

import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, TrainingArguments

import gptforge  # noqa: F401  (registers the Auto classes)
from gptforge.configuration import GPTForgeConfig
from gptforge.modeling import loss_gptforge, modeling_gptforge
from gptforge.training.trainer import GPTForgeTrainer

CALLS: Counter[str] = Counter()


def count_calls(cls: type, name: str) -> None:
    original = cls.forward

    def forward(ctx, *args):
        CALLS[name] += 1
        return original(ctx, *args)

    cls.forward = staticmethod(forward)


def main(out: str, global_batch: int, steps: int) -> None:
    count_calls(modeling_gptforge.RMSNormFunction, "RMSNormFunction")
    count_calls(modeling_gptforge.SiLUMul, "SiLUMul")
    count_calls(loss_gptforge.ChunkedLinearCrossEntropy, "ChunkedLinearCrossEntropy")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = GPTForgeConfig.from_preset(
        "tiny", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, vocab_size=128,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 128, (global_batch * steps, 16), generator=generator)
    data = [{"input_ids": row, "labels": row} for row in blocks]
    fsdp = {
        "fsdp": True,
        "fsdp_config": {"fsdp_version": 2, "transformer_layer_cls_to_wrap": ["GPTForgeDecoderLayer"]},
    }
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=global_batch // world, max_steps=steps, logging_steps=1,
        learning_rate=1e-2, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
        **(fsdp if world > 1 else {}),
    )  # fmt: skip
    trainer = GPTForgeTrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    rank = trainer.args.process_index
    head = trainer.model_wrapped.lm_head.weight if hasattr(trainer.model_wrapped, "lm_head") else None
    result = {
        "fsdp": trainer.is_fsdp_enabled,
        "wrapped": type(trainer.model_wrapped).__name__,
        "head_weight": type(head.data).__name__ if head is not None else None,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "calls": dict(CALLS),
    }
    Path(out, f"result_{rank}.json").write_text(json.dumps(result))
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if rank == 0:
        torch.save({k: v.clone() for k, v in state_dict.items()}, Path(out, "weights.pt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
