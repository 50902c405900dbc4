"""The benchmark shapes and the model pairs built at them.

Each pair is a Transformers reference model and the gptforge model converted from it with gptforge's own conversion
code, so both start from the same weights and compute the same function (the benchmark checks that their losses and
generated tokens agree before timing them).
"""

from dataclasses import dataclass, replace

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from gptforge import from_transformers


@dataclass(frozen=True)
class Shape:
    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    seq: int
    batch: int
    # SwiGLU width for the Llama-architecture pair: the Llama rule 8/3 * hidden rounded up to a multiple of 256
    llama_intermediate: int
    # plain-MLP width for the GPT-2 pair: 4 * hidden
    gpt2_intermediate: int

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


SHAPES = {
    "small": Shape("small", vocab=8192, hidden=256, layers=4, heads=4, seq=256, batch=8, llama_intermediate=768,
                   gpt2_intermediate=1024),
    "gpt2s": Shape("gpt2s", vocab=50257, hidden=768, layers=12, heads=12, seq=256, batch=2, llama_intermediate=2048,
                   gpt2_intermediate=3072),
}  # fmt: skip
# memory only: gpt2s at batch 8, where the (tokens, vocab) logits outweigh the gradients (at batch 2 they do not)
SHAPES["gpt2s-b8"] = replace(SHAPES["gpt2s"], name="gpt2s-b8", batch=8)

# family -> (reference label, gptforge label)
FAMILIES = {"llama": ("Llama", "gptforge"), "gpt2": ("GPT-2", "gptforge-gpt2")}


def reference_model(family: str, shape: Shape, max_positions: int = 2048) -> PreTrainedModel:
    """Transformers' `LlamaForCausalLM` (RoPE, RMSNorm, SwiGLU, untied head, multi-head attention) or
    `GPT2LMHeadModel` (dropout off, so both models do the same arithmetic) at `shape`, fp32, SDPA attention."""
    common = dict(bos_token_id=0, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa")
    if family == "llama":
        config = LlamaConfig(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            intermediate_size=shape.llama_intermediate,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.heads,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            **common,
        )
        return LlamaForCausalLM(config)
    config = GPT2Config(
        vocab_size=shape.vocab,
        n_embd=shape.hidden,
        n_inner=shape.gpt2_intermediate,
        n_layer=shape.layers,
        n_head=shape.heads,
        n_positions=max_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **common,
    )
    return GPT2LMHeadModel(config)


def model_pair(
    family: str, shape: Shape, max_positions: int = 2048, seed: int = 0, training: bool = True
) -> dict[str, PreTrainedModel]:
    """{reference label: native model, gptforge label: the same weights as a gptforge model}, in train mode.

    For training, `use_cache` is off in both configs: Transformers' Llama and GPT-2 otherwise build a KV cache in
    every training forward (time and memory the comparison should not charge them; gptforge never caches while
    training)."""
    torch.manual_seed(seed)
    reference = reference_model(family, shape, max_positions).train()
    forge = from_transformers(reference).train()
    for model in (reference, forge):
        model.config.use_cache = not training
        model.generation_config.eos_token_id = None  # decode exactly the requested number of tokens
        model.generation_config.pad_token_id = 0
    ref_label, forge_label = FAMILIES[family]
    return {ref_label: reference, forge_label: forge}


def matmul_params(model: PreTrainedModel) -> int:
    """Parameters that take part in a matmul: every 2-D weight except the embedding tables (a lookup, not a matmul),
    plus the LM head when it is tied to the token embedding."""
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)}
    counted = sum(p.numel() for p in model.parameters() if p.dim() == 2 and id(p) not in embeddings)
    head = model.get_output_embeddings().weight
    return counted + (head.numel() if id(head) in embeddings else 0)


def train_flops_per_token(model: PreTrainedModel, shape: Shape, seq: int | None = None) -> float:
    """6 x matmul parameters (forward 2, backward 4) + attention: 12 x layers x seq x hidden (QK^T and AV, forward
    and backward, counted over the full square as PaLM's MFU does; causal kernels skip about half of it)."""
    seq = seq or shape.seq
    return 6 * matmul_params(model) + 12 * shape.layers * seq * shape.hidden
