"""One Trainer run each for causal LM and classification: the loss goes down on a fixed batch."""

import torch
from _helpers import arch_config
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from gptforge import GPTForgeForCausalLM, GPTForgeForSequenceClassification


def train(model, dataset, tmp_path) -> list[float]:
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        max_steps=8,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def test_trainer_causal_lm_loss_goes_down(tmp_path):
    ids = torch.randint(0, 128, (4, 16))
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    losses = train(GPTForgeForCausalLM(arch_config("llama")), dataset, tmp_path)
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]


def test_trainer_classification_loss_goes_down(tmp_path):
    ids = torch.randint(1, 128, (4, 12))
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "labels": [0, 1, 2, 1]})
    model = GPTForgeForSequenceClassification(arch_config("gpt2", num_labels=3, pad_token_id=0))
    losses = train(model, dataset, tmp_path)
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
