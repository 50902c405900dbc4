"""Data loading, the embedded stdlib default, tokenise + pack, and the small pure helpers of the scripts."""

import json
from collections import Counter
from itertools import chain
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
from _helpers import write_jsonl

from gptforge.tokenization import train_tokenizer
from gptforge.training import corpus as corpus_lib
from gptforge.training import encoding, sources
from gptforge.training.checkpointing import find_latest_checkpoint, mark_complete
from gptforge.training.config import parse_overrides
from gptforge.training.errors import UsageError
from gptforge.training.evaluation import window_sizes, windows
from gptforge.training.metrics import classification_scores, confusion_matrix
from gptforge.training.resume import prepare_run_folder

DOCS = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n# note {i}: " + "word " * (i % 5 + 3) for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(DOCS * 3, 300)


# --- the embedded default: the standard library -------------------------------------------------------------------


def test_stdlib_files_skip_tests_and_site_packages():
    files = corpus_lib.stdlib_files()
    assert len(files) > 300
    for path in files:
        parts = Path(path).parts
        assert not set(parts) & corpus_lib.STDLIB_SKIP_DIRS, path
        assert not parts[-1].startswith("test_"), path
    assert "os.py" in files and str(Path("email") / "message.py") in files


def test_stdlib_split_is_by_file_deterministic_and_covers_each_package():
    files = corpus_lib.stdlib_files()
    first, second = corpus_lib.split_stdlib_files(files), corpus_lib.split_stdlib_files(list(reversed(files)))
    assert first == second
    train, validation = set(first["train"]), set(first["validation"])
    assert not train & validation and train | validation == set(files)
    packages = Counter(corpus_lib.stdlib_package(p) for p in files)
    for package, count in packages.items():
        if count >= 2:  # every package with two files has files on both sides
            assert any(corpus_lib.stdlib_package(p) == package for p in validation), package
            assert any(corpus_lib.stdlib_package(p) == package for p in train), package


def test_stdlib_corpus_and_classification_share_the_file_split(tmp_path):
    corpus = corpus_lib.stdlib_corpus(max_files=80, cache_dir=str(tmp_path))
    assert set(corpus) == {"train", "validation"} and corpus["train"].column_names == ["text", "path"]
    assert not set(corpus["train"]["path"]) & set(corpus["validation"]["path"])

    tasks = corpus_lib.stdlib_classification(max_files=60, cache_dir=str(tmp_path))
    labels = set(tasks["train"]["label"])
    assert 8 <= len(labels) <= 12
    for row in tasks["train"].select(range(0, len(tasks["train"]), 50)):
        assert row["label"] == Path(row["path"]).parts[0]  # the top-level package the chunk comes from
    all_files = corpus_lib.stdlib_files()
    split = corpus_lib.split_stdlib_files(all_files)
    assert set(tasks["validation"]["path"]) <= set(split["validation"])  # the corpus's validation files
    assert set(tasks["train"]["path"]) <= set(split["train"])


# --- local sources ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["txt", "jsonl", "json", "csv", "parquet"])
def test_load_source_reads_local_file_types(tmp_path, kind):
    rows = [{"text": doc, "label": "a" if i % 2 else "b"} for i, doc in enumerate(DOCS[:20])]
    path = tmp_path / f"data.{kind}"
    if kind == "txt":
        folder = tmp_path / "texts"
        folder.mkdir()
        for i, row in enumerate(rows):
            (folder / f"doc{i:02d}.txt").write_text(row["text"])
        path = folder
    elif kind == "jsonl":
        write_jsonl(path, rows)
    elif kind == "json":
        path.write_text(json.dumps(rows))
    else:
        frame = datasets.Dataset.from_list(rows)
        frame.to_csv(str(path)) if kind == "csv" else frame.to_parquet(str(path))
    loaded = sources.load_source(path, validation_split=0.25, cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "validation"}
    assert len(loaded["train"]) + len(loaded["validation"]) == 20 and len(loaded["validation"]) == 5
    texts = set(chain(loaded["train"]["text"], loaded["validation"]["text"]))
    assert texts == {row["text"] for row in rows}  # whole files stay whole documents for .txt


def test_folder_split_names_and_seeded_holdout(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": d} for d in DOCS[:30]])
    write_jsonl(folder / "dev.jsonl", [{"text": d} for d in DOCS[30:]])
    loaded = sources.load_source(folder, cache_dir=str(tmp_path / "c"))
    assert (len(loaded["train"]), len(loaded["validation"])) == (30, 10)

    only_train = tmp_path / "only.jsonl"
    write_jsonl(only_train, [{"text": d} for d in DOCS])
    a = sources.load_source(only_train, seed=3, cache_dir=str(tmp_path / "c"))
    b = sources.load_source(only_train, seed=3, cache_dir=str(tmp_path / "c"))
    assert list(a["validation"]["text"]) == list(b["validation"]["text"]) and len(a["validation"]) == 4


@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("train.jsonl", "train"),
        ("train-00000-of-00002.parquet", "train"),
        ("dev.jsonl", "validation"),
        ("my_valid_set.csv", "validation"),
        ("validation/part1.csv", "validation"),
        ("test.txt", "test"),
        ("interval.txt", "train"),  # whole words only: "interval" is not "val"
        ("contest_notes.md", "train"),
        ("docs/chapter1.txt", "train"),
    ],
)
def test_split_of_a_file_follows_the_words_of_its_path(path, split):
    assert sources._split_of(path) == split


def test_missing_path_names_what_was_looked_for(tmp_path):
    missing = tmp_path / "nope" / "data.jsonl"
    with pytest.raises(UsageError, match=r"no data at .*data\.jsonl.*no such file or folder"):
        sources.load_source(missing)
    # A bare name could be a Hub id: offline (as in the tests), the error says both places were tried.
    with pytest.raises(UsageError, match=r"no local file or folder .* cannot be fetched offline"):
        sources.load_source("surely-not-a-local-folder")


def test_folder_without_data_files_and_unsupported_file(tmp_path):
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(UsageError, match=r"no data files in folder .*\(found: image\.png\); supported: text/code"):
        sources.load_source(tmp_path)
    with pytest.raises(UsageError, match=r"no loader reads '\.png'; supported: text/code files \(.*\.py"):
        sources.load_source(tmp_path / "image.png")


def test_missing_column_lists_existing_columns():
    loaded = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"body": d, "y": 1} for d in DOCS])})
    with pytest.raises(
        UsageError, match=r"column 'text' not found in the train split of 'x'; available columns: body, y"
    ):
        sources.require_columns(loaded, ["text"], "'x'")


def test_empty_after_filtering_is_an_error():
    rows = [{"text": "   "}, {"text": ""}, {"text": None}, {"text": "\n"}]
    loaded = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    with pytest.raises(UsageError, match=r"the train split of src is empty after dropping rows without text"):
        sources.drop_empty(loaded, "text", "src")


# --- tokenise + pack ----------------------------------------------------------------------------------------------


def test_pack_puts_eos_between_documents_in_fixed_blocks(tmp_path, tokenizer):
    loaded = sources.load_source(
        write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS]), cache_dir=str(tmp_path / "c")
    )
    packed = encoding.pack_for_causal_lm(loaded, tokenizer, block_size=16)
    train = packed["train"]
    assert train.column_names == ["input_ids"] and all(len(row) == 16 for row in train["input_ids"])
    stream = [
        token
        for text in loaded["train"]["text"]
        for token in tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ]
    flat = [int(t) for block in train["input_ids"] for t in block]
    assert flat == stream[: len(stream) // 16 * 16]  # EOS closes every document; only the tail is dropped
    # cached: the packed split is memory-mapped from a file in the datasets cache, not recomputed in memory
    assert train.cache_files and str(tmp_path / "c") in train.cache_files[0]["filename"]


def test_pack_multiprocess_matches_single_process(tmp_path, tokenizer):
    loaded = sources.load_source(
        write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS]), cache_dir=str(tmp_path / "c")
    )
    one = encoding.pack_for_causal_lm(loaded, tokenizer, block_size=8, num_proc=1)
    two = encoding.pack_for_causal_lm(loaded, tokenizer, block_size=8, num_proc=2)
    # Each process packs its own contiguous shard of documents: the first blocks agree exactly, and the shard boundary
    # costs at most one partial block per extra process.
    assert one["train"]["input_ids"][0].tolist() == two["train"]["input_ids"][0].tolist()
    assert len(one["train"]) - 1 <= len(two["train"]) <= len(one["train"])


def mapped_file_mb() -> float:
    """This process's resident pages of memory-mapped files (Linux)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssFile"))
    return int(line.split()[1]) / 1024


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc/self/status (Linux)")


@needs_proc
def test_release_mapped_pages_returns_what_a_scan_read(tmp_path):
    # two sources of 24 MB each, read in rows of 64 KB; joined, as `datasets` joins the shards of a large source
    halves = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text("a line of words that repeats\n" * 800_000)
        halves.append(sources.load_data(str(tmp_path / f"{name}.txt"), cache_dir=str(tmp_path / name)).dataset)
    joined = datasets.concatenate_datasets([half["train"] for half in halves])
    assert len({entry["filename"] for entry in joined.cache_files}) >= 2
    before = mapped_file_mb()
    assert sum(len(t) for t in joined["text"]) > 35e6  # read every row: the pages come back
    assert mapped_file_mb() - before > 30
    sources.release_mapped_pages(joined)
    assert mapped_file_mb() - before < 10
    assert joined[0]["text"].startswith("a line of words")  # and the data reads as before


@needs_proc
def test_loading_and_packing_a_large_source_leave_its_pages_behind(tmp_path, tokenizer):
    (tmp_path / "big.txt").write_text("".join(DOCS) * 12_000)  # 40 MB in rows of 64 KB
    before = mapped_file_mb()
    loaded = sources.load_data(str(tmp_path / "big.txt"), cache_dir=str(tmp_path / "c"))  # reads every row
    assert mapped_file_mb() - before < 15
    packed = encoding.pack_for_causal_lm(loaded.dataset, tokenizer, block_size=64, num_proc=1)
    assert len(packed["train"]) > 10_000
    # without the release after each batch the 40 MB read stays mapped in this process (see the test above)
    assert mapped_file_mb() - before < 15


def test_pack_too_short_for_one_block(tmp_path, tokenizer):
    loaded = sources.load_source(
        write_jsonl(tmp_path / "d.jsonl", [{"text": "x = 1"}, {"text": "y = 2"}]), cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(
        UsageError, match=r"the train split of data holds about \d+ tokens, fewer than one block of block_size=512"
    ):
        encoding.pack_for_causal_lm(loaded, tokenizer, block_size=512, source="data")


def test_label_names_strings_sorted_and_single_class_error(tmp_path):
    rows = [{"text": d, "label": ["spam", "ham", "eggs"][i % 3]} for i, d in enumerate(DOCS)]
    loaded = sources.load_source(write_jsonl(tmp_path / "d.jsonl", rows), cache_dir=str(tmp_path / "c"))
    assert encoding.label_names_of(loaded, "label", "src") == ["eggs", "ham", "spam"]

    one = sources.load_source(
        write_jsonl(tmp_path / "one.jsonl", [{"text": d, "label": "only"} for d in DOCS]),
        cache_dir=str(tmp_path / "c"),
    )
    with pytest.raises(ValueError, match=r"label column 'label' of src has a single class \(\['only'\]\)"):
        encoding.label_names_of(one, "label", "src")


def test_class_label_feature_keeps_its_names(tokenizer):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    part = datasets.Dataset.from_dict({"text": DOCS[:4], "label": [1, 0, 1, 1]}, features=features)
    dataset = datasets.DatasetDict({"train": part, "validation": part})
    names = encoding.label_names_of(dataset, "label", "src")
    assert names == ["neg", "pos"]
    encoded = encoding.encode_for_classification(dataset, tokenizer, names, max_length=8)
    assert encoded["train"]["labels"] == [1, 0, 1, 1] and max(map(len, encoded["train"]["input_ids"])) <= 8


# --- small helpers of the subcommands -----------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "block", "stride"), [(10, 4, 2), (10, 4, 4), (3, 4, 2), (101, 16, 5), (2, 8, 8)])
def test_sliding_windows_score_every_token_once_with_context(length, block, stride):
    spans = windows(length, block, stride)
    scored = [p for _, end, first in spans for p in range(first, end)]
    assert scored == list(range(1, length))
    assert all(end - start <= block and first > start for start, end, first in spans)


def test_window_sizes_default_to_the_model_and_refuse_what_it_cannot_read():
    assert window_sizes(SimpleNamespace(max_position_embeddings=64), None, None) == (64, 32)
    assert window_sizes(SimpleNamespace(max_position_embeddings=4096), None, None) == (1024, 512)
    assert window_sizes(SimpleNamespace(max_position_embeddings=64), 1, None) == (1, 1)
    with pytest.raises(UsageError, match=r"block_size=100 is larger than the model's max_position_embeddings=64"):
        window_sizes(SimpleNamespace(max_position_embeddings=64), 100, None)
    with pytest.raises(UsageError, match=r"^--stride must be in \(0, block_size=32\], got 40$"):
        window_sizes(SimpleNamespace(max_position_embeddings=64), 32, 40)


def test_classification_scores_against_hand_computed():
    truth = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    assert confusion_matrix(truth, predicted, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    scores = classification_scores(truth, predicted, 3)
    # per-class F1: 2/(2+1+1)=0.5, 4/(4+1+0)=0.8, 2/(2+0+1)=2/3
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_find_latest_checkpoint_skips_incomplete(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    for step in (2, 4, 6):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"]:
            (folder / name).write_text("x")
        if step != 6:  # checkpoint-6: every file there, but its save never reached the completion marker
            mark_complete(folder)
    (tmp_path / "checkpoint-10-tmp").mkdir()
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


def test_run_folder_refused_cleared_by_overwrite_or_resumed(tmp_path):
    """`prepare_run_folder`: a folder holding a run needs --resume or --overwrite; --overwrite deletes the run's own
    files and nothing else; --resume takes the newest complete checkpoint and deletes nothing."""
    out = tmp_path / "run"
    assert prepare_run_folder(out, resume=False, overwrite=False) is None  # a new folder
    for step in (2, 4, 6):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        for name in ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"]:
            (folder / name).write_text("x")
        if step != 6:
            mark_complete(folder)
    for name in ("final", "tokenizer", ".resume-checkpoint-4"):
        (out / name).mkdir()
    for name in ("metrics.jsonl", "loss.png", "notes.txt"):
        (out / name).write_text("x")
    run = "checkpoint-2, checkpoint-4, checkpoint-6, final, metrics.jsonl"
    with pytest.raises(UsageError, match=rf"already holds a run \({run}\); pass --resume .* --overwrite"):
        prepare_run_folder(out, resume=False, overwrite=False)
    everything = sorted(p.name for p in out.iterdir())
    assert prepare_run_folder(out, resume=True, overwrite=True) == out / "checkpoint-4"
    assert sorted(p.name for p in out.iterdir()) == everything
    assert prepare_run_folder(out, resume=False, overwrite=True) is None
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(UsageError, match=r"--resume: no complete checkpoint in .* \(found: none\); drop --resume"):
        prepare_run_folder(out, resume=True, overwrite=False)


def test_parse_overrides_types_and_unknown_field():
    assert parse_overrides(["hidden_size=64", "tie_word_embeddings=true", "hidden_act=gelu", "head_dim=None"]) == {
        "hidden_size": 64,
        "tie_word_embeddings": True,
        "hidden_act": "gelu",
        "head_dim": None,
    }
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['hiden_size'\]"):
        parse_overrides(["hiden_size=64"])
    with pytest.raises(ValueError, match=r"--set expects field=value, got 'hidden_size'"):
        parse_overrides(["hidden_size"])
