"""GPTForgeTokenizer and train_tokenizer: exact round trips, GPT-2 parity, Auto loading, batching, clear errors.

Every vocabulary is trained here, on a few hundred KB of the interpreter's own stdlib source; nothing is downloaded.
"""

import ast
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import datasets
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer, GPT2Tokenizer, TokenizersBackend
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

from gptforge import GPTForgeConfig
from gptforge.remote_code import flatten_module
from gptforge.tokenization import GPTForgeTokenizer, train_tokenizer

STDLIB = Path(os.__file__).parent
VOCAB_SIZE = 1000
MAX_LENGTH = 128
EXTRA = "<|user|>"

ROUND_TRIP_CASES = {
    "empty": "",
    "one space": " ",
    "whitespace runs": "a  b   c    \n\n\n   \t\t  end   ",
    "code": "def f(x):\n\tif x:\n\t\treturn  x  # two spaces\r\n    else:\n        pass\n",
    "spaces before punctuation": "x = f(a , b) . c ; d ? e !",
    "emoji": "ok 🎉👩‍👩‍👧 🇫🇷 ✌🏽",
    "combining marks": "e\u0301 a\u0308\u0323 Z\u0351\u0352\u0357",
    "chinese": "中文文本，标点符号。混合 English 和 中文",
    "arabic and hebrew": "مرحبا بالعالم שלום עולם",
    "control chars": "\x00\x01\x7f\u200b\ufeff\ufffd",
    "special token literal": "end<|endoftext|>start",
}


def stdlib_texts(start: int, budget: int) -> list[str]:
    """Consecutive top-level stdlib modules (sorted, from index `start`) up to `budget` characters."""
    texts = []
    for path in sorted(STDLIB.glob("*.py"))[start:]:
        texts.append(path.read_text(encoding="utf-8"))
        if sum(map(len, texts)) >= budget:
            break
    return texts


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return stdlib_texts(0, 300_000)


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    """Source the vocabulary never saw, so parity is checked on unseen words too."""
    return stdlib_texts(60, 100_000)


@pytest.fixture(scope="module")
def tok(corpus) -> GPTForgeTokenizer:
    return train_tokenizer(corpus, VOCAB_SIZE, special_tokens=[EXTRA], model_max_length=MAX_LENGTH)


# --- vocabulary layout -------------------------------------------------------------------------------------------


def test_trained_tokenizer_is_a_thin_tokenizers_backend(tok):
    assert isinstance(tok, GPTForgeTokenizer) and isinstance(tok, TokenizersBackend)
    assert tok.is_fast
    assert len(tok) == VOCAB_SIZE
    assert tok.model_max_length == MAX_LENGTH


def test_special_tokens_come_first_with_stable_ids(tok):
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 0, 1)
    assert tok.convert_tokens_to_ids(EXTRA) == 2
    assert tok.all_special_tokens == ["<|endoftext|>", "<|pad|>", EXTRA]
    # then all 256 byte symbols, so no input ever needs an unknown token
    byte_ids = sorted(tok.convert_tokens_to_ids(symbol) for symbol in pre_tokenizers.ByteLevel.alphabet())
    assert byte_ids == list(range(3, 3 + 256))


def test_no_bos_by_default_like_gpt2(tok):
    assert tok.add_bos_token is False
    assert tok("hello")["input_ids"] == tok("hello", add_special_tokens=False)["input_ids"]


def test_truncation_follows_model_max_length(tok, corpus):
    assert len(tok(corpus[0], truncation=True)["input_ids"]) == MAX_LENGTH


# --- round trip --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_decode_encode_round_trip_fixed_cases(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.batch_decode([ids, ids]) == [text, text]


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_decode_encode_round_trip_property(tok, text):
    # st.text draws from all of Unicode except lone surrogates, which are not text (see the next tests)
    assert tok.decode(tok.encode(text)) == text


def test_no_normalisation_so_nfc_and_nfd_stay_distinct(tok):
    nfc, nfd = unicodedata.normalize("NFC", "é"), unicodedata.normalize("NFD", "é")
    assert tok.encode(nfc) != tok.encode(nfd)
    assert tok.decode(tok.encode(nfd)) == nfd


@pytest.mark.parametrize("text, where", [("a\ud800b", "`text`"), (["ok", "\udfff"], r"`text\[1\]`")])
def test_lone_surrogate_is_a_clear_unicode_error(tok, text, where):
    with pytest.raises(UnicodeEncodeError, match=f"lone surrogate in {where}"):
        tok(text)


def test_lone_surrogate_error_names_the_position(tok):
    with pytest.raises(UnicodeEncodeError) as info:
        tok.encode("ab\ud800")
    assert (info.value.start, info.value.object[info.value.start]) == (2, "\ud800")


def test_decoding_half_a_character_gives_the_replacement_character(tok):
    first_byte_of_cjk = tok.convert_tokens_to_ids("ä")  # byte-level symbol of 0xE4, the lead byte of "世"
    assert tok.decode([first_byte_of_cjk]) == "\ufffd"


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, type_name", [(123, "int"), (3.5, "float"), (b"bytes", "bytes"), ({"a": 1}, "dict"), (None, "NoneType")]
)
def test_non_string_input_is_a_type_error_naming_the_type(tok, value, type_name):
    with pytest.raises(TypeError, match=f"expected `text` to be a str or a list of str, got {type_name}"):
        tok(value)
    with pytest.raises(TypeError, match=f"got {type_name}"):
        tok.encode(value)
    with pytest.raises(TypeError, match=f"got {type_name}"):
        tok.tokenize(value)


def test_non_string_inside_a_batch_or_pair_names_the_item(tok):
    with pytest.raises(TypeError, match=r"`text\[1\]` to be a str or a list of str, got NoneType"):
        tok(["fine", None])
    with pytest.raises(TypeError, match="`text_pair` to be a str or a list of str, got int"):
        tok("fine", text_pair=7)


def test_folder_without_tokenizer_files_names_folder_and_files(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")  # half of the GPT-2 pair is not enough
    pattern = rf"{tmp_path}.*tokenizer\.json.*vocab\.json \+ merges\.txt.*found: \['vocab\.json'\]"
    with pytest.raises(FileNotFoundError, match=pattern):
        GPTForgeTokenizer.from_pretrained(tmp_path)


def test_construction_without_vocabulary_says_what_is_needed():
    with pytest.raises(ValueError, match=r"no vocabulary.*tokenizer\.json.*vocab\.json \+ merges\.txt"):
        GPTForgeTokenizer()


# --- save / load / Auto ------------------------------------------------------------------------------------------


def test_save_writes_tokenizer_json_and_config(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "GPTForgeTokenizer"
    assert saved["model_max_length"] == MAX_LENGTH
    assert saved["clean_up_tokenization_spaces"] is False


def test_autotokenizer_reload_gives_identical_ids(tok, tmp_path, held_out):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is GPTForgeTokenizer
    texts = held_out + list(ROUND_TRIP_CASES.values()) + [f"{EXTRA} hi <|pad|>"]
    assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
    assert (loaded.pad_token_id, loaded.model_max_length, loaded.all_special_tokens) == (
        1,
        MAX_LENGTH,
        tok.all_special_tokens,
    )


def test_registered_for_model_type_gptforge(tok, tmp_path):
    assert TOKENIZER_MAPPING[GPTForgeConfig] is GPTForgeTokenizer
    # A model folder whose tokenizer_config names no class resolves through the config's model_type alone.
    GPTForgeConfig().save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    config_file = tmp_path / "tokenizer_config.json"
    config_file.write_text(
        json.dumps({k: v for k, v in json.loads(config_file.read_text()).items() if k != "tokenizer_class"})
    )
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is GPTForgeTokenizer


def _load_without_gptforge(folder: Path, texts: list[str], **kwargs) -> list:
    """AutoTokenizer in a fresh interpreter where `import gptforge` fails: (class name, add_bos, max length, ids)."""
    script = (
        "import json, sys\n"
        "sys.modules['gptforge'] = None  # an environment without the plugin\n"
        "from transformers import AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained({str(folder)!r}, **{kwargs!r})\n"
        "print(json.dumps([type(tok).__name__, tok.add_bos_token, tok.model_max_length,"
        f" tok({texts!r})['input_ids']]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_saved_folder_loads_without_gptforge_as_remote_code(tok, tmp_path):
    """A consumer without the plugin loads the flat copy of the class that `save_pretrained` wrote: same ids."""
    with_bos = GPTForgeTokenizer(tokenizer_object=tok.backend_tokenizer, add_bos_token=True, model_max_length=64)
    GPTForgeConfig().save_pretrained(tmp_path)
    with_bos.save_pretrained(tmp_path)
    texts = list(ROUND_TRIP_CASES.values())
    name, add_bos, max_length, ids = _load_without_gptforge(tmp_path, texts, trust_remote_code=True)
    assert (name, add_bos, max_length) == ("GPTForgeTokenizer", True, 64)
    assert ids == with_bos(texts)["input_ids"]


def test_tokenizer_files_alone_load_without_any_code(tok, tmp_path):
    """Without remote code (no auto_map, no .py), the unknown class name falls back to `TokenizersBackend`."""
    with_bos = GPTForgeTokenizer(tokenizer_object=tok.backend_tokenizer, add_bos_token=True, model_max_length=64)
    with_bos.save_pretrained(tmp_path)
    for code_file in tmp_path.glob("*.py"):
        code_file.unlink()
    config_file = tmp_path / "tokenizer_config.json"
    saved = json.loads(config_file.read_text())
    saved.pop("auto_map", None)
    config_file.write_text(json.dumps(saved))
    texts = list(ROUND_TRIP_CASES.values())
    name, _, max_length, ids = _load_without_gptforge(tmp_path, texts)
    # The base class reports add_bos_token=False, but the template in tokenizer.json still prepends BOS.
    assert (name, max_length) == ("TokenizersBackend", 64)
    assert ids == with_bos(texts)["input_ids"]


def test_add_bos_token_prepends_and_survives_save_load(tok, tmp_path):
    with_bos = GPTForgeTokenizer(tokenizer_object=tok.backend_tokenizer, add_bos_token=True)
    assert with_bos("hi")["input_ids"] == [0, *tok("hi")["input_ids"]]
    with_bos.save_pretrained(tmp_path)
    # `from_pretrained` drops the saved flag when tokenizer.json exists; the class reads it back from the template.
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.add_bos_token is True
    assert reloaded("hi")["input_ids"] == [0, *tok("hi")["input_ids"]]
    reloaded.add_bos_token = False
    assert reloaded("hi")["input_ids"] == tok("hi")["input_ids"]


def test_remote_code_copy_imports_only_stdlib_tokenizers_transformers():
    """The flat copy shipped next to checkpoints may not need gptforge: stdlib, tokenizers, transformers only."""
    tree = ast.parse(flatten_module("tokenization_gptforge"))
    roots, relative = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            relative.append(node.module)
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert relative == []
    assert roots - set(sys.stdlib_module_names) == {"tokenizers", "transformers"}


# --- GPT-2 compatibility -----------------------------------------------------------------------------------------


def test_same_ids_as_gpt2_tokenizer_from_vocab_and_merges(tok, tmp_path, held_out):
    tok.backend_tokenizer.model.save(str(tmp_path))  # writes GPT-2's vocab.json + merges.txt
    assert sorted(os.listdir(tmp_path)) == ["merges.txt", "vocab.json"]
    files = {"vocab": str(tmp_path / "vocab.json"), "merges": str(tmp_path / "merges.txt")}
    reference = GPT2Tokenizer(**files)
    texts = held_out + [t for name, t in ROUND_TRIP_CASES.items() if name != "empty"]
    for ours in (GPTForgeTokenizer.from_pretrained(tmp_path), GPTForgeTokenizer(**files)):
        assert ours(texts)["input_ids"] == reference(texts)["input_ids"]
    # and the same ids as the tokenizer.json it came from
    assert reference(texts)["input_ids"] == tok(texts)["input_ids"]


# --- batching ----------------------------------------------------------------------------------------------------


def test_batch_padding_right_by_default_with_pad_id(tok):
    batch = tok(["a", "hello world again"], padding=True, return_tensors="pt")
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape[0] == 2
    length = int(batch["attention_mask"][0].sum())
    assert (batch["input_ids"][0, length:] == tok.pad_token_id).all()
    assert (batch["attention_mask"][0, length:] == 0).all()


def test_left_padding_for_generation(tok):
    texts = ["a", "hello world again"]
    for batch in (
        tok(texts, padding=True, padding_side="left", return_tensors="pt"),
        GPTForgeTokenizer(tokenizer_object=tok.backend_tokenizer, padding_side="left")(
            texts, padding=True, return_tensors="pt"
        ),
    ):
        assert (batch["attention_mask"][:, -1] == 1).all()  # the last position is a real token in every row
        assert batch["input_ids"][0, 0] == tok.pad_token_id
        assert batch["input_ids"][1].tolist() == tok(texts[1])["input_ids"]


def test_truncation_and_max_length_padding(tok, corpus):
    batch = tok([corpus[0], "short"], padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == tok(corpus[0])["input_ids"][:16]


def test_offsets_mapping_covers_the_text(tok):
    text = "def f(x):\n    return x + 1  # done"
    encoding = tok(text, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    assert len(offsets) == len(encoding["input_ids"])
    assert "".join(text[start:end] for start, end in offsets) == text
    assert [text[start:end] for start, end in offsets] == [tok.decode([i]) for i in encoding["input_ids"]]


def test_train_new_from_iterator_keeps_the_class_and_special_tokens(tok, corpus):
    retrained = tok.train_new_from_iterator(corpus[:3], vocab_size=400)
    assert type(retrained) is GPTForgeTokenizer
    assert (retrained.bos_token_id, retrained.pad_token_id, len(retrained)) == (0, 1, 400)


# --- training inputs and errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus() -> list[str]:
    return stdlib_texts(0, 40_000)


def test_training_from_files_paths_and_generators(small_corpus, tmp_path):
    for index, text in enumerate(small_corpus):
        (tmp_path / f"part{index}.txt").write_text(text, encoding="utf-8")
    files = sorted(tmp_path.glob("*.txt"))
    from_list = train_tokenizer(files, 400)
    from_glob = train_tokenizer(tmp_path.glob("*.txt"), 400)  # a generator of Paths
    assert from_list.get_vocab() == from_glob.get_vocab()
    assert len(from_list) == 400
    assert from_list.decode(from_list.encode(small_corpus[0])) == small_corpus[0]


def test_training_from_a_dataset_matches_training_from_strings(small_corpus):
    dataset = datasets.Dataset.from_dict({"id": list(range(len(small_corpus))), "content": small_corpus})
    from_strings = train_tokenizer(small_corpus, 400)
    assert train_tokenizer(dataset, 400, text_column="content").get_vocab() == from_strings.get_vocab()
    streamed = dataset.to_iterable_dataset()
    assert train_tokenizer(streamed, 400, text_column="content").get_vocab() == from_strings.get_vocab()


def test_dataset_without_the_text_column_lists_the_columns(small_corpus):
    dataset = datasets.Dataset.from_dict({"id": [0], "content": small_corpus[:1]})
    with pytest.raises(
        ValueError, match=r"text_column='text' is not in the dataset; its columns are \['id', 'content'\]"
    ):
        train_tokenizer(dataset, 400)


@pytest.mark.parametrize("empty", [[], ["", ""], iter([])], ids=["no items", "empty strings", "empty iterator"])
def test_empty_corpus_is_a_value_error(empty):
    with pytest.raises(ValueError, match="the corpus is empty"):
        train_tokenizer(empty, 400)


def test_empty_files_and_empty_dataset_are_value_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"the corpus is empty: the 1 file\(s\) hold no text"):
        train_tokenizer([tmp_path / "empty.txt"], 400)
    with pytest.raises(ValueError, match="the corpus is empty"):
        train_tokenizer(datasets.Dataset.from_dict({"text": []}), 400)


@pytest.mark.parametrize("extras, minimum", [((), 258), (("<|user|>", "<|assistant|>"), 260)])
def test_vocab_size_below_bytes_plus_specials_names_the_minimum(small_corpus, extras, minimum):
    with pytest.raises(ValueError, match=rf"vocab_size={minimum - 1} is too small: the minimum is {minimum}"):
        train_tokenizer(small_corpus, minimum - 1, special_tokens=extras)
    assert len(train_tokenizer(small_corpus, minimum, special_tokens=extras)) == minimum  # exactly enough: no merges


def test_bad_corpus_items_and_shapes(small_corpus, tmp_path):
    with pytest.raises(TypeError, match=r"`corpus\[1\]` to be a str or a list of str, got int"):
        train_tokenizer(["fine", 5], 400)
    with pytest.raises(TypeError, match="corpus is a bare str"):
        train_tokenizer(small_corpus[0], 400)
    with pytest.raises(TypeError, match=r"corpus is a mapping.*corpus\['train'\]"):
        train_tokenizer({"train": small_corpus}, 400)
    with pytest.raises(FileNotFoundError, match="1 corpus file"):
        train_tokenizer([tmp_path / "missing.txt"], 400)
    with pytest.raises(ValueError, match="duplicate special tokens"):
        train_tokenizer(small_corpus, 400, special_tokens=["<|pad|>"])
    with pytest.raises(TypeError, match="vocab_size must be an int, got float"):
        train_tokenizer(small_corpus, 400.0)


def test_str_that_names_a_file_is_text_but_warns(small_corpus, tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(small_corpus[0])
    with pytest.warns(UserWarning, match="wrap paths with pathlib.Path"):
        trained = train_tokenizer([str(path)], 300)
    assert len(trained) < 300  # trained on the path string itself, a few dozen characters
