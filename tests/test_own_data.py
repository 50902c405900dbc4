"""The data a user brings, with nothing but `--data`: one text file, a folder of mixed text, tables with labels, and
every mistake in them ending in a `UsageError` that names the file and what would work, before `--out` exists.

Each run is tiny (two layers, block 32, two steps) so the whole path, train-tokenizer to `push --dry-run`, stays fast.
"""

import json
import os
import random
import re
from functools import partial
from pathlib import Path

import datasets
import pytest

from gptforge.scripts import cli, evaluate, finetune, pretrain, push, train_tokenizer
from gptforge.training import encoding, sources
from gptforge.training.errors import UsageError

TINY = [
    "hidden_size=32",
    "intermediate_size=64",
    "num_hidden_layers=2",
    "num_attention_heads=4",
    "num_key_value_heads=2",
    "max_position_embeddings=64",
]
WORDS = ["alpha", "beta", "gamma", "delta", "value", "items", "count", "total", "index", "name", "return", "def"]
RUN = ["--block-size", "32", "--batch-size", "4", "--max-steps", "2", "--eval-steps", "2", "--save-steps", "2"]
RUN += ["--logging-steps", "1", "--max-eval-blocks", "4", "--no-progress"]


def lines(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + "\n" for _ in range(n))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("own-data")


@pytest.fixture(scope="module")
def text_file(work) -> Path:
    """One plain-text file of 700 lines: a single document, no validation split."""
    path = work / "notes.txt"
    path.write_text(lines(700))
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(work, text_file) -> Path:
    out = work / "tok"
    assert cli.main(["train-tokenizer", "--data", str(text_file), "--out", str(out), "--vocab-size", "300"]) == 0
    return out


def pretrain_argv(out: Path, data: Path, cache: Path, *extra: str) -> list[str]:
    return ["pretrain", "--out", str(out), "--data", str(data), "--cache-dir", str(cache)] + [
        f"--set={item}" for item in TINY
    ] + RUN + list(extra)  # fmt: skip


def test_train_tokenizer_on_one_file_needs_no_validation_split(work, text_file, tokenizer_dir, capsys):
    summary = train_tokenizer.main(work / "tok2", data=text_file, vocab_size=300)
    assert summary["bytes_per_token"] is None  # nothing held out: a tokenizer needs no validation split
    assert "no validation split to measure compression on" in capsys.readouterr().out
    assert (tokenizer_dir / "tokenizer.json").is_file()


def test_every_subcommand_on_one_700_line_text_file_then_push(work, text_file, tokenizer_dir, capsys):
    cache = work / "cache"
    out = work / "lm"
    capsys.readouterr()
    assert cli.main(pretrain_argv(out, text_file, cache, "--tokenizer", str(tokenizer_dir))) == 0
    printed = capsys.readouterr().out
    # the last tenth of the characters: one document, too few rows to sample
    held = "held out the last 2,"
    assert held in printed and "(10%)" in printed and "tokenised and packed" in printed
    summary = json.loads((out / "final" / "training_summary.json").read_text())
    assert summary["held_out"].startswith(held) and summary["global_step"] == 2
    # nothing pickled in the final folder: the training arguments are JSON
    assert not (out / "final" / "training_args.bin").exists()
    args = json.loads((out / "final" / "training_args.json").read_text())
    assert args["max_steps"] == 2 and "output_dir" not in args

    # a second run on the same data and tokenizer reads the prepared blocks back: no tokenising
    assert cli.main(pretrain_argv(work / "lm-again", text_file, cache, "--tokenizer", str(tokenizer_dir))) == 0
    printed = capsys.readouterr().out
    assert "reusing the blocks prepared earlier" in printed and "tokenised and packed" not in printed

    result = evaluate.main(out / "final", data=text_file, block_size=32)
    assert result["held_out"].startswith(held) and result["documents"] == 1 and result["tokens"] > 100

    ft = work / "ft"
    argv = ["finetune", "--task", "causal-lm", "--model", str(out / "final"), "--out", str(ft), "--data"]
    argv += [str(text_file), "--block-size", "32", "--max-steps", "2", "--batch-size", "4", "--no-progress"]
    assert cli.main(argv + ["--cache-dir", str(cache)]) == 0
    assert json.loads((ft / "results.json").read_text())["held_out"].startswith(held)

    for folder in (out / "final", ft / "final"):
        files = push.main(folder, "me/tiny", dry_run=True)
        assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {f.path for f in files}
        assert not (folder / "README.md").exists()  # a dry run writes nothing


def test_pretrain_trains_its_own_tokenizer_on_one_file(work, text_file):
    out = work / "own-tok"
    assert cli.main(pretrain_argv(out, text_file, work / "cache", "--tokenizer-vocab-size", "300")) == 0
    assert (out / "tokenizer" / "tokenizer.json").is_file() and (out / "final" / "model.safetensors").is_file()


def test_convert_and_export_output_push_as_written(work, text_file, tokenizer_dir):
    from gptforge.scripts import convert, export

    # the default recipe's model has no native class; the message names the recipe that keeps the export
    model = work / "lm" / "final"
    if not model.is_dir():
        assert cli.main(pretrain_argv(work / "lm", text_file, work / "cache", "--tokenizer", str(tokenizer_dir))) == 0
    with pytest.raises(UsageError, match=r"embedding_shortcut.*--recipe modern-exportable` \(or `classic`\) keeps"):
        export.main(model, work / "refused")
    assert not (work / "refused").exists()
    argv = pretrain_argv(work / "lm-exportable", text_file, work / "cache", "--tokenizer", str(tokenizer_dir))
    assert cli.main([*argv, "--recipe", "modern-exportable"]) == 0
    model = work / "lm-exportable" / "final"
    native = work / "native"
    export.main(model, native)
    back = work / "back"
    convert.main(native, back)
    for folder in (native, back):
        assert any(f.path == "model.safetensors" for f in push.main(folder, "me/x", dry_run=True))


def test_push_refuses_pickles_and_names_what_they_are(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "training_args.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UsageError) as caught:
        push.main(tmp_path, "me/x", dry_run=True)
    message = str(caught.value)
    assert "training_args.bin is a pickle file (.bin)" in message and "weight" not in message
    (tmp_path / "training_args.bin").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UsageError, match=r"pytorch_model\.bin is a pickle file .*For weights: .*safetensors"):
        push.main(tmp_path, "me/x", dry_run=True)


def test_folder_of_mixed_text_code_and_markdown(work, tokenizer_dir, capsys):
    folder = work / "mixed"
    (folder / "pkg").mkdir(parents=True)
    for i in range(8):
        (folder / f"note{i}.txt").write_text(lines(40, seed=i))
        (folder / "pkg" / f"mod{i}.py").write_text("".join(f"def f{j}(x):\n    return x + {j}\n\n" for j in range(30)))
        (folder / f"doc{i}.md").write_text("# Title\n\n" + lines(30, seed=100 + i))
    (folder / "image.png").write_bytes(b"\x89PNG\x00\x00")  # not a text file: ignored
    loaded = sources.load_data(folder, cache_dir=str(work / "cache"))
    assert loaded.held_out.startswith("held out 2 of 24 rows")
    paths = set(loaded.dataset["train"]["path"]) | set(loaded.dataset["validation"]["path"])
    assert {Path(p).suffix for p in paths} == {".txt", ".py", ".md"}
    out = work / "mixed-run"
    assert cli.main(pretrain_argv(out, folder, work / "cache", "--tokenizer", str(tokenizer_dir))) == 0
    assert (out / "final" / "model.safetensors").is_file()
    assert cli.main(["train-tokenizer", "--data", str(folder), "--out", str(work / "mixed-tok")]) == 0


def labelled_rows(n: int) -> list[dict]:
    rng = random.Random(3)
    rows = []
    for _ in range(n):
        label = rng.choice(["alpha", "beta", "gamma"])
        rows.append({"text": " ".join([label] * 4 + [rng.choice(WORDS) for _ in range(3)]), "label": label})
    return rows


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_finetune_classifier_on_a_table_with_string_labels(work, text_file, tokenizer_dir, kind):
    model = work / "lm" / "final"
    if not model.is_dir():
        assert cli.main(pretrain_argv(work / "lm", text_file, work / "cache", "--tokenizer", str(tokenizer_dir))) == 0
    rows = labelled_rows(40)
    path = work / f"labelled.{kind}"
    if kind == "csv":
        path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = work / f"cls-{kind}"
    argv = ["finetune", "--model", str(model), "--out", str(out), "--data", str(path), "--max-steps", "2"]
    argv += ["--batch-size", "8", "--max-length", "16", "--no-progress", "--cache-dir", str(work / "cache")]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["alpha", "beta", "gamma"]
    assert results["held_out"].startswith("held out 4 of 40 rows (10%, seeded with 0)")
    assert any(f.path == "model.safetensors" for f in push.main(out / "final", "me/cls", dry_run=True))


# --- every mistake: one UsageError naming the value, and nothing written to --out ------------------------------------


def fails(command, out: Path, message: str, **kwargs) -> None:
    """`command.main(out, ...)` raises `UsageError` with exactly `message`, and `out` was not created."""
    with pytest.raises(UsageError) as caught:
        command(out, **kwargs)
    assert str(caught.value) == message
    assert not out.exists()


def test_missing_path(tmp_path):
    missing = tmp_path / "missing.txt"
    fails(
        train_tokenizer.main,
        tmp_path / "out",
        f"no data at {str(missing)!r}: no such file or folder {str(missing)!r}",
        data=missing,
    )


def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.txt"
    if os.geteuid() == 0:  # root reads any file: a file whose read fails at the kernel stands in
        path.symlink_to("/proc/self/mem")
        reason = "Input/output error"
    else:
        path.write_text("text\n")
        path.chmod(0)
        reason = "Permission denied"
    fails(
        pretrain.main,
        tmp_path / "out",
        f"cannot read {str(path)!r}: {reason}; check its permissions",
        data=path,
        overrides=TINY,
        block_size=32,
    )


def test_extension_no_loader_reads_lists_the_ones_that_work(tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(UsageError) as caught:
        train_tokenizer.main(tmp_path / "out", data=path)
    message = str(caught.value)
    assert message.startswith(f"cannot read {str(path)!r}: no loader reads '.docx'; supported: text/code files (")
    for works in (".txt", ".md", ".py", ".jsonl", ".csv", ".parquet", "save_to_disk folder", "Hub dataset id"):
        assert works in message
    assert not (tmp_path / "out").exists()


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    fails(train_tokenizer.main, tmp_path / "out", f"{str(path)!r} is empty: there is no text to read", data=path)


def test_binary_file(tmp_path):
    path = tmp_path / "blob.txt"
    path.write_bytes(b"abc\x00\x01\x02" * 10)
    fails(
        train_tokenizer.main,
        tmp_path / "out",
        f"{str(path)!r} is a binary file (a NUL byte at offset 3), not text; pass UTF-8 text, or a table "
        "(.json, .jsonl, .csv, .parquet, .arrow)",
        data=path,
    )


def test_bytes_that_are_not_utf8_name_file_and_offset_unless_replaced(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("caf\u00e9 au lait\n" * 3).encode("utf-8") + "na\u00efve\n".encode("latin-1") + b"end\n" * 50)
    offset = len(("caf\u00e9 au lait\n" * 3).encode()) + 2
    fails(
        train_tokenizer.main,
        tmp_path / "out",
        f"{str(path)!r} is not UTF-8 text: byte 0xef at offset {offset} cannot be decoded; convert the file to "
        "UTF-8, or pass --encoding-errors replace to read such bytes as U+FFFD",
        data=path,
        cache_dir=str(tmp_path / "cache"),
    )
    loaded = sources.load_data(path, encoding_errors="replace", hold_out=False, cache_dir=str(tmp_path / "cache"))
    assert "na\ufffdve" in loaded.dataset["train"][0]["text"]


def test_missing_text_column_lists_the_columns(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"body": f"text {i}", "y": i % 2}) + "\n" for i in range(30)))
    fails(
        pretrain.main,
        tmp_path / "out",
        f"column 'text' not found in the train split of {str(path)!r}; available columns: body, y",
        data=path,
        overrides=TINY,
        block_size=32,
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.fixture(scope="module")
def tiny_model(work, text_file, tokenizer_dir) -> Path:
    model = work / "lm" / "final"
    if not model.is_dir():
        assert cli.main(pretrain_argv(work / "lm", text_file, work / "cache", "--tokenizer", str(tokenizer_dir))) == 0
    return model


def test_missing_label_column_and_single_class(tmp_path, tiny_model):
    def finetune_fails(data: Path, message: str, **kwargs) -> None:
        fine = partial(finetune.main, tiny_model, data=data, max_length=16, cache_dir=str(tmp_path / "cache"))
        fails(fine, tmp_path / "out", message, **kwargs)

    path = tmp_path / "rows.csv"
    path.write_text("sentence,label\n" + "".join(f"words {i},same\n" for i in range(20)))
    finetune_fails(
        path, f"column 'text' not found in the train split of {str(path)!r}; available columns: sentence, label"
    )
    unlabelled = tmp_path / "rows.jsonl"
    unlabelled.write_text("".join(json.dumps({"text": f"words {i}", "y": i % 2}) + "\n" for i in range(20)))
    finetune_fails(
        unlabelled, f"column 'label' not found in the train split of {str(unlabelled)!r}; available columns: text, y"
    )
    finetune_fails(
        path,
        f"label column 'label' of {str(path)!r} has a single class (['same']); classification needs at least two",
        text_column="sentence",
    )


def test_streaming_needs_max_steps(tmp_path, text_file):
    fails(
        pretrain.main,
        tmp_path / "out",
        "--streaming needs --max-steps: a stream has no length to count epochs by",
        data=text_file,
        streaming=True,
    )


# --- the pieces -------------------------------------------------------------------------------------------------------


def test_text_rows_cut_at_line_ends_and_join_back(tmp_path):
    path = tmp_path / "long.txt"
    text = "".join(f"line {i} " + "\u00e9" * (i % 7) + "\n" for i in range(3000)) + "no newline at the end"
    path.write_text(text)
    rows = list(sources.text_rows(str(path), row_bytes=1000))
    assert len(rows) > 20 and "".join(r["text"] for r in rows) == text
    assert all(r["text"].endswith("\n") for r in rows[:-1])
    assert [r["continues"] for r in rows] == [True] * (len(rows) - 1) + [False]
    one_line = tmp_path / "one-line.txt"
    one_line.write_text("\u00e9\u4e2d" * 2000)  # no newline at all: cut between characters
    assert "".join(r["text"] for r in sources.text_rows(str(one_line), row_bytes=1001)) == "\u00e9\u4e2d" * 2000


def test_packing_closes_documents_not_rows(tmp_path):
    from gptforge.tokenization import train_tokenizer as train

    tok = train([lines(50)], 300)
    rows = [
        {"text": "alpha beta\n", "continues": True},
        {"text": "gamma delta\n", "continues": False},
        {"text": "value items\n", "continues": False},
    ]
    pack = encoding.packer(tok, 4)
    stream = [i for block in pack({k: [r[k] for r in rows] for k in rows[0]})["input_ids"] for i in block]
    ids = [tok(r["text"], add_special_tokens=False)["input_ids"] for r in rows]
    expected = ids[0] + ids[1] + [tok.eos_token_id] + ids[2] + [tok.eos_token_id]
    assert stream == expected[: len(expected) // 4 * 4]


def test_save_to_disk_folder_and_hold_out_by_rows(tmp_path):
    saved = tmp_path / "saved"
    datasets.Dataset.from_list([{"text": lines(3, seed=i)} for i in range(50)]).save_to_disk(str(saved))
    loaded = sources.load_data(saved)
    assert loaded.held_out.startswith("held out 5 of 50 rows (10%, seeded with 0)")
    assert len(loaded.dataset["train"]) == 45 and len(loaded.dataset["validation"]) == 5
    again = sources.load_data(saved)
    assert again.dataset["validation"]["text"] == loaded.dataset["validation"]["text"]


def test_held_out_tail_is_the_last_tenth_cut_at_a_line_end(tmp_path):
    path = tmp_path / "doc.txt"
    text = lines(200)
    path.write_text(text)
    loaded = sources.load_data(path, cache_dir=str(tmp_path / "cache"))
    train, validation = loaded.dataset["train"][0]["text"], loaded.dataset["validation"][0]["text"]
    assert train + validation == text and train.endswith("\n")
    assert abs(len(validation) - len(text) / 10) < 80
    assert re.match(r"held out the last [\d,]+ of [\d,]+ characters \(10%\)", loaded.held_out)


def test_streaming_packs_on_the_fly_and_holds_out_the_head(work, text_file, tokenizer_dir, capsys):
    out = work / "streamed"
    argv = pretrain_argv(out, text_file, work / "cache-stream", "--tokenizer", str(tokenizer_dir), "--streaming")
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"held out the first 4 blocks of the packed stream of {str(text_file)!r}" in printed
    summary = json.loads((out / "final" / "training_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["eval_loss"] is not None
    assert not (work / "cache-stream" / "gptforge-blocks").exists()  # nothing prepared up front
