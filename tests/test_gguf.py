"""`gptforge export --to gguf`: the file read back by llama.cpp's `gguf` reader and loaded by Transformers' own GGUF
loader, whose logits are compared with the source model's, per weight type."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, LlamaForCausalLM

from gptforge import GPTForgeConfig, GPTForgeForCausalLM, train_tokenizer
from gptforge.export_gguf import GGUF_TYPES, export_gguf, gguf_architecture
from gptforge.scripts import cli

gguf = pytest.importorskip("gguf")

TEXT = "hello gptforge, hello world and more words"
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
IDS = dict(vocab_size=300, bos_token_id=0, eos_token_id=0, pad_token_id=1)
SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
CONFIGS = {
    "llama": dict(preset="tiny", intermediate_size=128, num_key_value_heads=2, max_position_embeddings=64),
    # Transformers' GGUF loader reads GPT-2's context length into `n_ctx` and keeps `n_positions` at 1024
    "gpt2": dict(
        preset="gpt2-124m",
        intermediate_size=256,
        max_position_embeddings=1024,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        embedding_dropout=0.0,
    ),
}
# max |logit - source logit| / max |source logit| allowed; measured on these models (f32, f16, bf16, q8_0):
# llama 0, 3.7e-4, 3.9e-3, 1.5e-2; gpt2 0, 1.7e-4, 1.5e-3, 5.6e-3 (greedy argmax agreed at every position)
BOUNDS = {"f32": 1e-6, "f16": 2e-3, "bf16": 1e-2, "q8_0": 3e-2}
LLAMA_KEYS = {
    "llama.context_length",
    "llama.embedding_length",
    "llama.block_count",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.rope.freq_base",
    "llama.rope.dimension_count",
    "llama.vocab_size",
}
GPT2_KEYS = {
    "gpt2.context_length",
    "gpt2.embedding_length",
    "gpt2.block_count",
    "gpt2.feed_forward_length",
    "gpt2.attention.head_count",
    "gpt2.attention.layer_norm_epsilon",
}
COMMON_KEYS = {
    "general.architecture",
    "general.name",
    "general.file_type",
    "general.quantization_version",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.chat_template",
}
LAYER_TENSORS = {
    "llama": [
        "attn_norm.weight",
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_output.weight",
        "ffn_norm.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ],
    "gpt2": [
        f"{name}.{kind}"
        for kind in ("weight", "bias")
        for name in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down")
    ],
}


def config_for(arch: str, **overrides) -> GPTForgeConfig:
    spec = {**CONFIGS[arch], **overrides}
    return GPTForgeConfig.from_preset(spec.pop("preset"), **SIZES, **IDS, **spec)


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [TEXT + " the quick brown fox jumps over the lazy dog, quick words and foxes"] * 20
    tokenizer = train_tokenizer(corpus, vocab_size=300, special_tokens=["<|user|>"], model_max_length=64)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def exported(request, tmp_path_factory, tokenizer):
    """(architecture, source model, folder holding the source and one .gguf file per type)."""
    arch = request.param
    torch.manual_seed(0)
    model = GPTForgeForCausalLM(config_for(arch)).eval()
    folder = tmp_path_factory.mktemp(f"gguf-{arch}")
    model.save_pretrained(folder / "src")
    tokenizer.save_pretrained(folder / "src")
    for outtype in GGUF_TYPES:
        assert (
            cli.main(
                [
                    "export",
                    str(folder / "src"),
                    str(folder / f"{outtype}.gguf"),
                    "--to",
                    "gguf",
                    "--gguf-type",
                    outtype,
                ]
            )
            == 0
        )
    return arch, model, folder


def test_file_holds_llama_cpp_keys_and_tensors(exported, tokenizer):
    arch, model, folder = exported
    reader = gguf.GGUFReader(folder / "q8_0.gguf")
    fields = reader.fields
    assert COMMON_KEYS | (LLAMA_KEYS if arch == "llama" else GPT2_KEYS) <= set(fields)
    assert fields["general.architecture"].contents() == arch
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert fields["tokenizer.chat_template"].contents() == CHAT_TEMPLATE

    vocab = tokenizer.get_vocab()
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == model.config.vocab_size and all(tokens[i] == t for t, i in vocab.items())
    types = fields["tokenizer.ggml.token_type"].contents()
    specials = {vocab[t] for t in ("<|endoftext|>", "<|pad|>", "<|user|>")}
    assert {i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL} == specials
    merges = json.loads((folder / "src" / "tokenizer.json").read_text())["model"]["merges"]
    assert fields["tokenizer.ggml.merges"].contents() == [m if isinstance(m, str) else " ".join(m) for m in merges]
    for key, value in (("bos", 0), ("eos", 0), ("padding", 1)):
        assert fields[f"tokenizer.ggml.{key}_token_id"].contents() == value

    head = ["token_embd.weight"] + (["position_embd.weight"] if arch == "gpt2" else [])
    layers = [f"blk.{i}.{name}" for i in range(2) for name in LAYER_TENSORS[arch]]
    tail = ["output_norm.weight"] + (["output_norm.bias"] if arch == "gpt2" else [])
    # llama.cpp's converter writes GPT-2's output matrix even when tied; a tied Llama has none
    assert model.config.tie_word_embeddings == (arch == "gpt2")
    tail += ["output.weight"]
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(head + layers + tail)
    q8 = gguf.GGMLQuantizationType.Q8_0
    for name, tensor in tensors.items():
        kept_f32 = len(tensor.shape) == 1 or name.endswith("_norm.weight") or name == "position_embd.weight"
        assert tensor.tensor_type == (gguf.GGMLQuantizationType.F32 if kept_f32 else q8), name


@pytest.mark.parametrize("outtype", GGUF_TYPES)
def test_transformers_gguf_loader_reproduces_the_logits(exported, tokenizer, outtype):
    arch, model, folder = exported
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=f"{outtype}.gguf", dtype=torch.float32).eval()
    assert type(loaded) is {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel}[arch]
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference, logits = model(ids).logits, loaded(ids).logits
    error = ((logits - reference).abs().max() / reference.abs().max()).item()
    assert error <= BOUNDS[outtype], f"{outtype}: relative logit error {error:.2e}"
    if outtype == "f32":
        generated = loaded.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=1)
        assert torch.equal(generated, model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=1))


def test_transformers_reads_the_tokenizer_from_the_file(exported, tokenizer):
    _, _, folder = exported
    loaded = AutoTokenizer.from_pretrained(folder, gguf_file="f16.gguf")
    text = TEXT + " <|user|> ünïcode  spaces\n\ttabs"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(tokenizer(text)["input_ids"]) == text
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (0, 0, 1)


def test_refuses_what_does_not_map_naming_the_fields(tmp_path, tokenizer):
    cases = {
        "postnorm": (config_for("llama", preset="encoder", is_causal=True), r"norm_position='post'"),
        "llama-bias": (config_for("llama", attention_bias=True), r"GGUF llama .*attention_bias=True"),
        "llama-gelu": (config_for("llama", hidden_act="gelu"), r"hidden_act='gelu'"),
        "gpt2-erf-gelu": (config_for("gpt2", hidden_act="gelu"), r"GGUF gpt2 .*hidden_act='gelu'"),
        "gpt2-width": (config_for("gpt2", intermediate_size=128), r"intermediate_size=128 .*= 256"),
    }
    for name, (config, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            gguf_architecture(config)
        GPTForgeForCausalLM(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        with pytest.raises(ValueError, match=message):
            export_gguf(tmp_path / name, tmp_path / f"{name}.gguf")
    assert not list(tmp_path.glob("*.gguf*"))  # nothing written, not even a partial file


def test_refuses_an_existing_file_and_an_unknown_type(exported, tmp_path):
    _, _, folder = exported
    target = tmp_path / "model.gguf"
    target.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="already exists"):
        export_gguf(folder / "src", target)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match=r"unknown GGUF type 'q4_k'; expected one of"):
        export_gguf(folder / "src", tmp_path / "other.gguf", "q4_k")


def test_a_tied_llama_has_no_output_matrix(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = GPTForgeForCausalLM(config_for("llama", tie_word_embeddings=True)).eval()
    model.save_pretrained(tmp_path / "src")
    tokenizer.save_pretrained(tmp_path / "src")
    export_gguf(tmp_path / "src", tmp_path / "tied.gguf", "f32")
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(tmp_path / "tied.gguf").tensors}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tied.gguf", dtype=torch.float32).eval()
    assert loaded.config.tie_word_embeddings
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
