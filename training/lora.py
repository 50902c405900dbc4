"""LoRA adapters (PEFT) for fine-tuning: only the adapters, and a new classification head, train."""

from typing import Any

# every projection of attention and MLP: the usual LoRA targets for Llama-style blocks
DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def apply_lora(model: Any, task: str, r: int, alpha: int, dropout: float, target_modules: str) -> Any:
    """Wrap `model` with PEFT LoRA adapters; only adapters (and, for classification, the new head) train."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = [name.strip() for name in target_modules.split(",") if name.strip()]
    lora_config = LoraConfig(
        task_type=TaskType.SEQ_CLS if task == "classify" else TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
    )
    peft_model = get_peft_model(model, lora_config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    print(f"LoRA r={r}: {trainable:,} trainable parameters of {total:,} ({100 * trainable / total:.2f}%)")
    return peft_model
