"""Input and file validation for `modeling_gptforge`: `check_inputs` and `check_positions` reject a bad forward call
with a message naming the bad value (instead of a shape error deep inside an embedding, or a device-side assert);
`loading_error` and `check_loaded_keys` make `from_pretrained` name a corrupted weights file, mismatched shapes, and
missing or unknown tensors.

Separate from the modeling file so that file reads as the model, top to bottom; these checks hold no model logic. The
flat remote-code copy (gptforge/remote_code.py) ships it as a sibling file, `checks_gptforge.py`.
"""

import os

import torch
from safetensors import safe_open

from ..configuration.configuration_gptforge import GPTForgeConfig


class MismatchedShapesError(ValueError, RuntimeError):
    """Tensor shapes in a checkpoint that do not match its config.json. A `RuntimeError`, as Transformers raises for
    them (code written for any model catches that), and a `ValueError`, as gptforge raises for bad input."""


def loading_error(exc: Exception, path) -> Exception | None:
    """What `from_pretrained` should raise instead of `exc`, or None to re-raise it: an `OSError` naming a truncated or
    corrupted safetensors file, a `MismatchedShapesError` naming the folder for shapes that do not match config.json."""
    if type(exc).__name__ == "SafetensorError":
        return OSError(f"{unreadable_safetensors(path)}: {exc}")
    if isinstance(exc, RuntimeError) and "ignore_mismatched_sizes" in str(exc):
        return MismatchedShapesError(
            f"{path}: tensor shapes in the checkpoint do not match its config.json (the report above lists them)"
        )
    return None


def check_loaded_keys(info: dict, path, class_name: str) -> None:
    """Refuse a half-loaded model: Transformers only warns about missing or unexpected weights and re-initialises the
    missing ones. A trunk tensor (`model.*`) missing from the checkpoint, or one the model does not know, raises; only
    a task head (`lm_head`, `score`, `qa_outputs`) may be missing or extra, as when a causal-LM checkpoint starts a
    classifier."""
    heads = ("lm_head", "score", "qa_outputs")
    for kind, where in (("missing_keys", "missing from"), ("unexpected_keys", "unknown to the model, in")):
        trunk = sorted(k for k in info[kind] if k.split(".")[0] not in heads)
        if trunk:
            raise ValueError(
                f"{path}: {len(trunk)} tensor(s) {where} the checkpoint: {trunk[:8]}; the folder does not hold a "
                f"complete {class_name} (pass strict=False to load it anyway, with missing tensors freshly initialised)"
            )


def unreadable_safetensors(folder) -> str:
    """The first weights file in `folder` whose header cannot be read (the file to name in an error)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return folder
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(folder, name), framework="pt") as handle:
                    for key in handle.keys():
                        handle.get_slice(key)
            except Exception:
                return os.path.join(folder, name)
    return folder


def check_inputs(
    config: GPTForgeConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    has_cache: bool,
) -> None:
    """Fail at the door, naming the bad value, instead of deep inside an embedding (or as a device-side assert).

    Shape and dtype checks read metadata only, always. The token-id range check reads values, so it follows
    `checks_values`: on the CPU and at inference, not while training on an accelerator or under `torch.compile`.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if input_ids is not None:
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids (torch.long), got dtype {input_ids.dtype}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, sequence), got shape {tuple(input_ids.shape)}")
        shape = tuple(input_ids.shape)
    else:
        assert inputs_embeds is not None  # exactly one of the two, checked above
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape (batch, sequence, hidden_size={config.hidden_size}), "
                f"got shape {tuple(inputs_embeds.shape)}"
            )
        shape = tuple(inputs_embeds.shape[:2])
    if 0 in shape:
        raise ValueError(f"the input is empty (batch, sequence) = {shape}; pass at least one token per row")
    if attention_mask is not None and attention_mask.dim() == 2:
        # with a cache the mask also covers the cached tokens, so it may be longer than the new input
        if attention_mask.shape[0] != shape[0] or (
            attention_mask.shape[1] < shape[1] if has_cache else attention_mask.shape[1] != shape[1]
        ):
            expected = f"(batch={shape[0]}, {'cached + ' if has_cache else ''}sequence={shape[1]})"
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected {expected}")
    if input_ids is not None and checks_values(input_ids):
        low, high = torch.stack(torch.aminmax(input_ids)).tolist()  # both bounds in one read
        if low < 0 or high >= config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"input_ids holds token id {bad}, outside the vocabulary [0, {config.vocab_size - 1}]")


def check_positions(config: GPTForgeConfig, position_ids: torch.Tensor) -> None:
    """A learned position table has a fixed length; past it the lookup would fail deep inside the embedding."""
    if config.position_embedding_type == "learned" and checks_values(position_ids):
        highest = int(position_ids.max())
        if highest >= config.max_position_embeddings:
            raise ValueError(
                f"position {highest} is beyond the learned position table (max_position_embeddings="
                f"{config.max_position_embeddings}): a sequence, cached tokens included, may hold at most "
                f"{config.max_position_embeddings} tokens"
            )


def checks_values(tensor: torch.Tensor) -> bool:
    """Whether the forward checks the values of `tensor` (token ids, positions), which means reading them on the host.

    On the CPU that read is a memory load, so the checks always run there. On an accelerator it is a host sync: the
    CPU waits until the device has caught up, and a training step of a few tens of milliseconds then stalls at each
    read (an H200 step at gpt2-124m, 16 x 1024 tokens, is ~55 ms). So there the checks run at inference (autograd off:
    `generate`, evaluation, pipelines), where a forward reads its result back anyway, and are skipped while autograd
    records (training), where a bad id still stops the run, as the embedding's device-side assert. The training
    commands cannot produce such ids: their tokenizer's ids fit the model's vocabulary. Under `torch.compile` no value
    is read, so `fullgraph=True` and CUDA graphs keep working.
    """
    if torch.compiler.is_compiling():
        return False
    return tensor.device.type == "cpu" or not torch.is_grad_enabled()
