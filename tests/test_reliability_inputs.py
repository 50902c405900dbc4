"""Bad input at the model and bad files on disk: each a clear exception naming the value or the file."""

import json
import shutil

import pytest
import torch
from _helpers import arch_config
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from gptforge import GPTForgeForCausalLM, GPTForgeForSequenceClassification


@pytest.fixture(scope="module")
def gpt2_like():
    return GPTForgeForCausalLM(arch_config("gpt2", max_position_embeddings=16)).eval()


IDS = torch.randint(0, 128, (2, 8))


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        (dict(input_ids=torch.tensor([[1, 128]])), ValueError, r"token id 128, outside the vocabulary \[0, 127\]"),
        (dict(input_ids=torch.tensor([[-1, 3]])), ValueError, r"token id -1, outside the vocabulary \[0, 127\]"),
        (dict(input_ids=IDS.float()), TypeError, r"input_ids must hold integer token ids .* got dtype torch.float32"),
        (dict(input_ids=IDS[0]), ValueError, r"input_ids must have shape \(batch, sequence\), got shape \(8,\)"),
        (dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), ValueError, r"the input is empty .* = \(2, 0\)"),
        (dict(input_ids=IDS, inputs_embeds=torch.zeros(2, 8, 64)), ValueError, "exactly one of input_ids or inputs_embeds"),
        (dict(), ValueError, "exactly one of input_ids or inputs_embeds"),
        (dict(inputs_embeds=torch.zeros(2, 8, 63)), ValueError, r"inputs_embeds must have shape .*hidden_size=64.*\(2, 8, 63\)"),
        (dict(input_ids=IDS, attention_mask=torch.ones(2, 7)), ValueError, r"attention_mask has shape \(2, 7\); expected \(batch=2, sequence=8\)"),
        (dict(input_ids=IDS, attention_mask=torch.ones(3, 8)), ValueError, r"attention_mask has shape \(3, 8\)"),
        (dict(input_ids=IDS, labels=IDS[:, :5]), ValueError, r"labels has shape \(2, 5\); expected one label per input token, shape \(2, 8\)"),
        (dict(input_ids=torch.randint(0, 128, (1, 17))), ValueError, r"position 16 is beyond the learned position table \(max_position_embeddings=16\)"),
    ],
)  # fmt: skip
def test_bad_model_input_names_the_value(gpt2_like, inputs, error, message):
    with pytest.raises(error, match=message):
        gpt2_like(**inputs)


def test_decoding_past_the_position_table_is_a_clear_error(gpt2_like):
    out = gpt2_like(IDS, use_cache=True)
    with pytest.raises(ValueError, match="position 16 is beyond the learned position table"):
        for _ in range(10):
            out = gpt2_like(torch.tensor([[1], [2]]), cache=out.cache, use_cache=True)


def test_rope_models_have_no_position_limit():
    model = GPTForgeForCausalLM(arch_config("llama", max_position_embeddings=8)).eval()
    assert model(torch.randint(0, 128, (1, 20))).logits.shape == (1, 20, 128)


def test_all_ignored_labels_give_a_defined_loss():
    model = GPTForgeForCausalLM(arch_config("llama")).train()
    labels = torch.full((2, 8), -100)
    loss = model(IDS, labels=labels).loss
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()  # and it still has a graph


def test_gradient_accumulation_loss_equals_full_batch_loss():
    model = GPTForgeForCausalLM(arch_config("llama")).eval()
    ids = torch.randint(0, 128, (4, 10))
    labels = ids.clone()
    labels[0, :7] = -100  # uneven token counts between micro-batches
    full = model(ids, labels=labels).loss
    n_items = (labels[:, 1:] != -100).sum()
    micro = [model(ids[i : i + 2], labels=labels[i : i + 2], num_items_in_batch=n_items).loss for i in (0, 2)]
    torch.testing.assert_close(sum(micro), full)


# ---- files ----


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "model"
    GPTForgeForCausalLM(arch_config("llama")).save_pretrained(folder)
    return folder


def test_truncated_weights_name_the_file(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(OSError, match=rf"{weights}: .*not fully covered|{weights}: .*"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_garbage_weights_name_the_file(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(OSError, match=rf"{saved / 'model.safetensors'}: Error while deserializing header"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_missing_shard_names_the_shard(tmp_path):
    GPTForgeForCausalLM(arch_config("llama")).save_pretrained(tmp_path, max_shard_size="100KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=shards[-1].name):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_config_of_another_model_type_is_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    config["model_type"] = "bert"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{saved / 'config.json'}: model_type='bert' is not a gptforge config"):
        GPTForgeForCausalLM.from_pretrained(saved)


def test_config_with_invalid_fields_names_the_file(saved):
    config = json.loads((saved / "config.json").read_text())
    config["num_key_value_heads"] = 3
    (saved / "config.json").write_text(json.dumps(config))
    for load in (AutoConfig.from_pretrained, AutoModelForCausalLM.from_pretrained):
        with pytest.raises(ValueError, match=rf"{saved / 'config.json'}: num_key_value_heads=3 must divide"):
            load(saved)


def test_config_that_is_not_json_names_the_file(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(OSError, match=rf"{saved / 'config.json'}.* not a valid JSON file"):
        AutoModelForCausalLM.from_pretrained(saved)


@pytest.mark.parametrize("change", ["drop", "add"])
def test_incomplete_or_foreign_weights_are_an_error_unless_asked(saved, change):
    state = load_file(saved / "model.safetensors")
    if change == "drop":
        state.pop("model.layers.0.mlp.up_proj.weight")
        message = r"1 tensor\(s\) missing from the checkpoint: \['model.layers.0.mlp.up_proj.weight'\]"
    else:
        state["model.layers.7.extra.weight"] = torch.zeros(2)
        message = r"1 tensor\(s\) unknown to the model, in the checkpoint: \['model.layers.7.extra.weight'\]"
    save_file(state, saved / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=message):
        AutoModelForCausalLM.from_pretrained(saved)
    assert isinstance(AutoModelForCausalLM.from_pretrained(saved, strict=False), GPTForgeForCausalLM)


def test_shape_mismatch_names_the_folder(saved):
    state = load_file(saved / "model.safetensors")
    state["model.norm.weight"] = torch.ones(3)
    save_file(state, saved / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{saved}: tensor shapes in the checkpoint do not match its config.json"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_a_new_task_head_may_be_missing(saved, tmp_path):
    classifier = AutoModelForSequenceClassification.from_pretrained(saved, num_labels=3)
    assert isinstance(classifier, GPTForgeForSequenceClassification)
    shutil.rmtree(tmp_path / "model")


def test_nothing_in_the_package_unpickles():
    """Loading goes through safetensors; a `torch.load` anywhere in gptforge must pass weights_only=True."""
    import ast
    from pathlib import Path

    import gptforge

    roots = {
        Path(m.__file__).parent for m in (gptforge, gptforge.configuration, gptforge.modeling, gptforge.tokenization)
    }
    import gptforge.scripts
    import gptforge.training

    roots.add(Path(gptforge.scripts.__file__).parent)
    roots.add(Path(gptforge.training.__file__).parent)
    files = [path for root in roots for path in root.glob("*.py")]
    assert len(files) > 15
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "cloudpickle"} & {n.split(".")[0] for n in names}, f"{path}: {names}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load":
                owner = getattr(node.func.value, "id", None)
                if owner == "torch":
                    flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                    assert flags.get("weights_only") is True, f"{path}:{node.lineno} torch.load without weights_only"


def test_default_normaliser_counts_shift_labels_when_given():
    model = GPTForgeForCausalLM(arch_config("llama")).eval()
    ids = torch.randint(0, 128, (2, 6))
    shift = torch.full((2, 6), -100)
    shift[0, :3] = ids[0, 1:4]  # three counted targets, wherever labels would have said otherwise
    logits = model(ids).logits
    expected = torch.nn.functional.cross_entropy(logits[0, :3], shift[0, :3])
    torch.testing.assert_close(model(ids, labels=ids, shift_labels=shift).loss, expected)


def test_tokenizer_json_that_is_not_json_names_the_file(tmp_path):
    from transformers import AutoTokenizer

    from gptforge import train_tokenizer

    train_tokenizer(["def f(x):\n    return x + 1\n"] * 50, vocab_size=300).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'tokenizer.json'}: not valid JSON \(Expecting property name"):
        AutoTokenizer.from_pretrained(tmp_path)
