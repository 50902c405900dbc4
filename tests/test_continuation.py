"""One continuation per prompt, whichever path encodes it: a pretrained folder's tokenizer puts BOS before a text, as
packing put it before every document, so `gptforge generate`, `model.generate(**tokenizer(prompt))`, the
text-generation pipeline and lm-eval all feed the model BOS + prompt and continue it with the same tokens.

Also: packing owns its special tokens (blocks are bit-identical whatever the tokenizer prepends), a folder whose
tokenizer does not prepend BOS still gets exactly one from `generate`, and the folder's tokenizer prepends BOS when
loaded without gptforge (remote code, or the plain `PreTrainedTokenizerFast`).
"""

import copy
import hashlib
import io
import random
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from _consumers import run_python
from _helpers import write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from gptforge import GPTForgeForCausalLM
from gptforge.scripts import cli, generate
from gptforge.training import encoding, prepared
from gptforge.training.folders import adds_bos

PROMPT = "def alpha(beta):\n    total ="
NEW_TOKENS = 12
WORDS = ["alpha", "beta", "gamma", "delta", "value", "items", "count", "total", "index", "name"]


def make_docs(n: int) -> list[str]:
    rng = random.Random(0)
    docs = []
    for i in range(n):
        body = [f"    {rng.choice(WORDS)} = {rng.choice(WORDS)} + {rng.randint(0, 99)}" for _ in range(4)]
        docs.append("\n".join([f"def {rng.choice(WORDS)}_{i}({rng.choice(WORDS)}):", *body, "    return 0\n"]))
    return docs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tokenizer trained by `gptforge train-tokenizer` (it adds no BOS) and a 4-step `gptforge pretrain` with it."""
    root = tmp_path_factory.mktemp("continuation")
    corpus = root / "corpus"
    corpus.mkdir()
    docs = make_docs(48)
    write_jsonl(corpus / "train.jsonl", [{"text": d} for d in docs[:40]])
    write_jsonl(corpus / "validation.jsonl", [{"text": d} for d in docs[40:]])
    assert cli.main(["train-tokenizer", "--out", str(root / "tok"), "--data", str(corpus), "--vocab-size", "300"]) == 0
    argv = ["pretrain", "--out", str(root / "lm"), "--data", str(corpus), "--tokenizer", str(root / "tok")]
    argv += ["--set=hidden_size=32", "--set=intermediate_size=64", "--set=num_hidden_layers=2"]
    argv += ["--set=num_attention_heads=4", "--set=num_key_value_heads=2", "--set=max_position_embeddings=64"]
    argv += ["--block-size", "32", "--batch-size", "4", "--max-steps", "4", "--learning-rate", "1e-2"]
    argv += ["--warmup-steps", "1", "--eval-steps", "4", "--save-steps", "4", "--max-eval-blocks", "2"]
    argv += ["--cache-dir", str(root / "cache"), "--no-progress"]
    assert cli.main(argv) == 0
    return root


@pytest.fixture
def generate_calls(monkeypatch) -> list[tuple[list[int], list[int]]]:
    """(the real input ids, the new ids) of every `generate` call on a gptforge model, whoever makes it."""
    calls = []
    original = GPTForgeForCausalLM.generate

    def spy(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = kwargs.get("attention_mask")
        sequences = getattr(output, "sequences", output)
        for row in range(input_ids.shape[0]):
            real = input_ids[row] if mask is None else input_ids[row][mask[row].bool()]
            calls.append((real.tolist(), sequences[row, input_ids.shape[1] :].tolist()))
        return output

    monkeypatch.setattr(GPTForgeForCausalLM, "generate", spy)
    return calls


def starts_with_one_bos(ids: list[int], bos: int) -> bool:
    return len(ids) > 1 and ids[0] == bos and ids[1] != bos


def test_every_path_feeds_one_bos_and_continues_with_the_same_tokens(run, generate_calls):
    final = run / "lm" / "final"
    tok = AutoTokenizer.from_pretrained(final)
    bos = tok.bos_token_id
    assert tok.add_bos_token is True
    assert tok(PROMPT)["input_ids"] == [bos, *tok(PROMPT, add_special_tokens=False)["input_ids"]]
    assert tok.decode(tok(PROMPT)["input_ids"], skip_special_tokens=True) == PROMPT

    # (a) the CLI's generate
    [result] = generate.main(final, [PROMPT], max_new_tokens=NEW_TOKENS, out=io.StringIO())
    # (b) model.generate on the tokenizer's encoding
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    with torch.no_grad():
        model.generate(**tok(PROMPT, return_tensors="pt"), max_new_tokens=NEW_TOKENS, do_sample=False)
    # (c) the text-generation pipeline
    generator = pipeline("text-generation", model=str(final), device="cpu")
    [piped] = generator(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False)
    paths = ["gptforge generate", "model.generate", "pipeline"]
    # (d) lm-eval's generate_until, as its generation tasks call it
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(final), batch_size=1, device="cpu", dtype="float32")
    request = Instance("generate_until", {}, (PROMPT, {"until": ["@@@"], "max_gen_toks": NEW_TOKENS}), 0)
    [evaluated] = lm.generate_until([request], disable_tqdm=True)
    paths.append(f"lm-eval {lm_eval.__version__}")

    assert len(generate_calls) == len(paths)
    fed = {path: ids for path, (ids, _) in zip(paths, generate_calls, strict=True)}
    continued = {path: new for path, (_, new) in zip(paths, generate_calls, strict=True)}
    assert all(starts_with_one_bos(ids, bos) for ids in fed.values()), fed
    assert len({tuple(ids) for ids in fed.values()}) == 1, fed
    assert len({tuple(new) for new in continued.values()}) == 1, continued
    new = continued["model.generate"]
    assert len(new) == NEW_TOKENS or new[-1] == tok.eos_token_id
    text = tok.decode(new, skip_special_tokens=True)
    assert result["completion"] == text and piped["generated_text"] == PROMPT + text
    assert evaluated == text


@pytest.fixture(scope="module")
def unflagged(run) -> Path:
    """The pretrained folder with a tokenizer that does not prepend BOS, as pretraining saved them before it did."""
    old = run / "unflagged"
    shutil.copytree(run / "lm" / "final", old)
    tok = AutoTokenizer.from_pretrained(old)
    tok.add_bos_token = False
    tok.save_pretrained(old)
    assert not adds_bos(AutoTokenizer.from_pretrained(old))
    return old


def test_generate_gives_a_folder_without_the_flag_one_bos_too(run, unflagged, generate_calls):
    """Such a folder keeps its behaviour: `generate` puts BOS there itself; `--no-bos` feeds the bare prompt to both
    kinds of folder."""
    final, old = run / "lm" / "final", unflagged
    tok = AutoTokenizer.from_pretrained(old)
    settings = dict(max_new_tokens=NEW_TOKENS, out=io.StringIO())
    assert generate.main(old, [PROMPT], **settings) == generate.main(final, [PROMPT], **settings)
    assert generate.main(old, [PROMPT], bos=False, **settings) == generate.main(final, [PROMPT], bos=False, **settings)
    bare = tok(PROMPT, add_special_tokens=False)["input_ids"]
    fed = [ids for ids, _ in generate_calls]
    assert fed == [[tok.bos_token_id, *bare]] * 2 + [bare] * 2


def test_pretraining_saves_the_flag_in_checkpoints_and_reuses_its_blocks(run):
    """The checkpoint a resumed run reads its tokenizer from prepends BOS too, and finds the same prepared blocks:
    the blocks' key ignores what `tokenizer(text)` adds."""
    given = AutoTokenizer.from_pretrained(run / "tok")
    saved = AutoTokenizer.from_pretrained(run / "lm" / "checkpoint-4")
    assert not adds_bos(given) and adds_bos(saved)
    assert prepared.tokenizer_fingerprint(given) == prepared.tokenizer_fingerprint(saved)
    # a tokenizer without the flag keeps the key it had when the key hashed the whole definition
    definition = f"{given.backend_tokenizer.to_str()}\n{given.eos_token_id}"
    assert prepared.tokenizer_fingerprint(given) == hashlib.sha256(definition.encode()).hexdigest()


def test_packed_blocks_are_the_same_with_or_without_the_flag(run):
    """The packer alone owns a block's special tokens: EOS closes each document, nothing else is added."""
    plain = AutoTokenizer.from_pretrained(run / "tok")
    flagged = copy.deepcopy(plain)
    assert encoding.start_documents_with_bos(flagged) and not adds_bos(plain)
    docs = make_docs(12)
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": docs})})
    blocks = [encoding.pack_for_causal_lm(raw, t, block_size=16)["train"][:]["input_ids"] for t in (plain, flagged)]
    assert torch.equal(blocks[0], blocks[1])
    stream = [i for d in docs for i in [*plain(d, add_special_tokens=False)["input_ids"], plain.eos_token_id]]
    assert blocks[0].flatten().tolist() == stream[: len(stream) // 16 * 16]


def test_causal_lm_finetuning_flags_the_folder_it_saves(run, unflagged):
    """Fine-tuning packs as pretraining does, so its folder prepends BOS even when its base folder's did not."""
    out = run / "finetuned"
    argv = ["finetune", "--task", "causal-lm", "--model", str(unflagged), "--out", str(out)]
    argv += ["--data", str(run / "corpus"), "--block-size", "32", "--max-steps", "1", "--batch-size", "4"]
    assert cli.main([*argv, "--cache-dir", str(run / "cache"), "--no-progress"]) == 0
    assert adds_bos(AutoTokenizer.from_pretrained(out / "final"))


def test_classification_encodes_texts_as_the_tokenizer_does(run, unflagged):
    """BOS first exactly when the folder's tokenizer prepends it: training and inference encode alike."""
    texts = [PROMPT, "x"]
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": ["a", "b"]})})
    encoded = {}
    for folder in (run / "lm" / "final", unflagged):
        tok = AutoTokenizer.from_pretrained(folder)
        encoded[folder] = encoding.encode_for_classification(raw, tok, ["a", "b"], max_length=8)["train"]["input_ids"]
        assert encoded[folder] == tok(texts, truncation=True, max_length=8)["input_ids"]
    bare = [tok(text, add_special_tokens=False, truncation=True, max_length=7)["input_ids"] for text in texts]
    assert encoded[run / "lm" / "final"] == [[tok.bos_token_id, *ids] for ids in bare]
    assert encoded[unflagged][1] == bare[1]


def test_start_documents_with_bos_leaves_a_distinct_bos_alone(run):
    """Pretraining puts EOS between documents, never a BOS that differs from it: no flag for such a tokenizer."""
    tok = AutoTokenizer.from_pretrained(run / "tok")
    tok.add_special_tokens({"bos_token": "<|start|>"})
    assert encoding.start_documents_with_bos(tok) is False
    assert tok(PROMPT)["input_ids"] == tok(PROMPT, add_special_tokens=False)["input_ids"]


LOAD_WITHOUT_GPTFORGE = r"""
import json, sys
from transformers import AutoTokenizer, PreTrainedTokenizerFast

folder, prompt, out = sys.argv[1:4]
remote = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
plain = PreTrainedTokenizerFast.from_pretrained(folder)
json.dump({
    "classes": [type(remote).__name__, type(plain).__name__],
    "ids": [remote(prompt)["input_ids"], plain(prompt)["input_ids"]],
    "decoded": [t.decode(t(prompt)["input_ids"], skip_special_tokens=True) for t in (remote, plain)],
}, open(out, "w"))
"""


@pytest.mark.slow
def test_the_folder_prepends_bos_without_gptforge(run, tmp_path):
    final = run / "lm" / "final"
    tok = AutoTokenizer.from_pretrained(final)
    result = run_python(LOAD_WITHOUT_GPTFORGE, str(final), PROMPT, tmp_path=tmp_path, hide_gptforge=True)
    assert result["classes"][0] == "GPTForgeTokenizer"
    assert result["ids"] == [tok(PROMPT)["input_ids"]] * 2
    assert result["ids"][0][0] == tok.bos_token_id
    assert result["decoded"] == [PROMPT, PROMPT]
