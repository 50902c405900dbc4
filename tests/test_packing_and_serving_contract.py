"""Packed rows and the contract of vLLM's and SGLang's Transformers backend.

A packed row is what TRL's `padding_free` / `packing_strategy="bfd"` and the serving engines feed a model: one `[1, N]`
batch of several documents (or requests) back to back, `position_ids` restarting at 0 at each, no attention mask. The
model must attend within each document only; its output is then that of each document run alone.

vLLM and SGLang (their Transformers backend) build the base model through `auto_map["AutoModel"]` with
`config._attn_implementation` set to their own function registered in `ALL_ATTENTION_FUNCTIONS`, call it with the
flattened requests, `use_cache=False`, `return_dict=False` and extra kwargs that must reach that function, read
`layer_idx` from each attention module, and put their own LM head on top. Neither engine runs on this CPU-only
machine, so `varlen_attention` below stands in for theirs: it splits the row at each restart of `position_ids`.
"""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from _consumers import run_python, save_consumer_model
from _helpers import arch_config
from transformers import AttentionInterface, AutoConfig, AutoModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from gptforge import GPTForgeForCausalLM

DOC_LENGTHS = (5, 9, 3, 7)


def packed_documents(vocab_size: int, lengths=DOC_LENGTHS) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Documents of `lengths`, and their packed row: input_ids and position_ids, both (1, sum(lengths))."""
    docs = [torch.randint(2, vocab_size, (n,)) for n in lengths]
    input_ids = torch.cat(docs)[None]
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    return docs, input_ids, position_ids


@pytest.mark.parametrize("attn", ["sdpa", "eager", "flex_attention"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_packed_row_attends_within_each_document(arch, attn):
    model = GPTForgeForCausalLM(arch_config(arch)).eval()
    model.set_attn_implementation(attn)
    docs, input_ids, position_ids = packed_documents(model.config.vocab_size)
    with torch.no_grad():
        packed = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=doc[None], use_cache=False).logits[0] for doc in docs])
        # the same row read as one document differs: the check above can tell packing from no packing
        unpacked = model(input_ids=input_ids, use_cache=False).logits[0]
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)
    assert (unpacked[DOC_LENGTHS[0] :] - alone[DOC_LENGTHS[0] :]).abs().max() > 1e-3


# The first flex call of a process compiles its kernel; the rows above run after other tests compiled theirs.
FIRST_FLEX_CALL = """
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from _helpers import arch_config
from test_packing_and_serving_contract import packed_documents
from gptforge import GPTForgeForCausalLM

torch.manual_seed(0)
model = GPTForgeForCausalLM(arch_config("llama")).eval()
model.set_attn_implementation("flex_attention")
docs, input_ids, position_ids = packed_documents(model.config.vocab_size)
with torch.no_grad():
    packed = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]
    model.set_attn_implementation("sdpa")  # a packed row under sdpa equals its documents alone (the test above)
    reference = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]
error = (packed - reference).abs().max().item()
json.dump({"finite": bool(packed.isfinite().all()), "error": error}, open(sys.argv[2], "w"))
"""


def test_the_first_packed_flex_call_of_a_fresh_process_attends_within_each_document(tmp_path):
    """A packed row of 24 keys (5 + 9 + 3 + 7), the first flex call in each of two fresh processes with empty
    Inductor caches. torch's CPU flex kernel built from AVX2 code mis-masks key blocks 8 past a multiple of 16, in
    most fresh processes (NaN or logits off by whole units); `pad_keys_for_cpu_flex` pads them. On x86 the processes
    are told to build AVX2 code (`ATEN_CPU_CAPABILITY`), so AVX-512 machines run the failing kernel too."""
    assert sum(DOC_LENGTHS) % 16 == 8
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if platform.machine() in ("x86_64", "AMD64"):
        env["ATEN_CPU_CAPABILITY"] = "avx2"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    runs = []
    for i in range(2):
        env_i = {**env, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{i}")}
        out = tmp_path / f"run-{i}.json"
        cmd = [sys.executable, "-c", FIRST_FLEX_CALL, tests_dir, str(out)]
        runs.append((subprocess.Popen(cmd, env=env_i, stderr=subprocess.PIPE, text=True), out))
    for process, out in runs:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-4000:]
        result = json.loads(out.read_text())
        assert result["finite"] and result["error"] < 1e-5, result


def test_a_packed_row_trains_with_the_loss_of_its_documents():
    """Training (no cache, labels, the chunked loss) on a packed row: the loss is that of the documents alone."""
    model = GPTForgeForCausalLM(arch_config("llama")).train()
    docs, input_ids, position_ids = packed_documents(model.config.vocab_size)
    labels = input_ids.clone()
    starts = torch.tensor([0, *DOC_LENGTHS[:-1]]).cumsum(0)
    labels[0, starts] = -100  # a document's first token is not predicted from the previous document
    packed = model(input_ids=input_ids, position_ids=position_ids, labels=labels).loss
    total = sum(model(input_ids=doc[None], labels=doc[None], num_items_in_batch=1).loss for doc in docs)
    torch.testing.assert_close(packed, total / sum(n - 1 for n in DOC_LENGTHS), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# vLLM / SGLang Transformers backend
# --------------------------------------------------------------------------------------------------------------------

ENGINE_ATTENTION = "engine_varlen"
ENGINE_KWARGS = {"engine_metadata": "batch-7"}  # what an engine passes through to its attention function


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """An engine's attention: causal attention within each request, the requests found from `position_ids` (where
    a position is 0, a new one starts). Records what it received on the module, as the engine's own metadata."""
    module.engine_calls.append(
        {
            "layer_idx": module.layer_idx,
            "scaling": scaling,
            "is_causal": module.is_causal,
            "mask": attention_mask is not None,
            "extra": {k: kwargs[k] for k in ENGINE_KWARGS if k in kwargs},
        }
    )
    positions = kwargs["position_ids"][0]
    starts = [*(positions == 0).nonzero().flatten().tolist(), positions.numel()]
    outputs = []
    for start, end in zip(starts[:-1], starts[1:]):
        span = slice(start, end)
        out, _ = sdpa_attention_forward(
            module, query[:, :, span], key[:, :, span], value[:, :, span], None, scaling=scaling, is_causal=True
        )
        outputs.append(out)
    return torch.cat(outputs, dim=1), None


@pytest.fixture
def engine_attention():
    AttentionInterface.register(ENGINE_ATTENTION, varlen_attention)
    yield ENGINE_ATTENTION
    del ALL_ATTENTION_FUNCTIONS._global_mapping[ENGINE_ATTENTION]


def test_the_base_model_runs_under_an_engine_attention_function(tmp_path, engine_attention):
    folder = tmp_path / "lm"
    lm = save_consumer_model(folder)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert config.auto_map["AutoModel"] == "modeling_gptforge.GPTForgeModel"
    config._attn_implementation = engine_attention  # what vLLM's TransformersModel does before building
    base = AutoModel.from_config(config, trust_remote_code=True)
    base.load_state_dict(lm.model.state_dict())
    base.eval()
    attention_modules = [m for m in base.modules() if type(m).__name__ == "GPTForgeAttention"]
    assert [m.layer_idx for m in attention_modules] == list(range(config.num_hidden_layers))
    for module in attention_modules:
        module.engine_calls = []

    docs, input_ids, position_ids = packed_documents(config.vocab_size)
    with torch.no_grad():
        hidden = base(
            input_ids=input_ids, position_ids=position_ids, use_cache=False, return_dict=False, **ENGINE_KWARGS
        )[0]
        alone = torch.cat([lm.model(input_ids=doc[None], use_cache=False).last_hidden_state[0] for doc in docs])
    torch.testing.assert_close(hidden[0], alone, rtol=0, atol=1e-5)

    for index, module in enumerate(attention_modules):
        assert module.engine_calls == [
            {
                "layer_idx": index,
                "scaling": module.head_dim**-0.5,
                "is_causal": True,
                "mask": False,
                "extra": ENGINE_KWARGS,
            }
        ]
    # the engine's own head on the base model: vLLM replaces `lm_head` with a parallel one holding the same weight
    engine_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
    engine_head.weight = lm.lm_head.weight
    with torch.no_grad():
        logits = engine_head(hidden[0])
        expected = lm(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


ENGINE_WITHOUT_GPTFORGE = r"""
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AttentionInterface, AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

folder, docs_json, out = sys.argv[1:4]
docs = [torch.tensor(d) for d in json.loads(docs_json)]
calls = []

def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    calls.append([module.layer_idx, scaling, attention_mask is None, kwargs.get("engine_metadata")])
    positions = kwargs["position_ids"][0]
    starts = [*(positions == 0).nonzero().flatten().tolist(), positions.numel()]
    parts = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, scaling=scaling,
                               is_causal=True)[0]
        for a, b in zip(starts[:-1], starts[1:])
    ]
    return torch.cat(parts, dim=1), None

AttentionInterface.register("engine_varlen", varlen_attention)
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
config._attn_implementation = "engine_varlen"
base = AutoModel.from_config(config, trust_remote_code=True).eval()
weights = load_file(folder + "/model.safetensors")
missing = base.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
lm = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
input_ids = torch.cat(docs)[None]
position_ids = torch.cat([torch.arange(len(d)) for d in docs])[None]
with torch.no_grad():
    hidden = base(input_ids=input_ids, position_ids=position_ids, use_cache=False, return_dict=False,
                  engine_metadata="batch-7")[0][0]
    alone = torch.cat([lm.model(input_ids=d[None], use_cache=False).last_hidden_state[0] for d in docs])
json.dump({"module": type(base).__module__, "calls": calls, "max_diff": (hidden - alone).abs().max().item(),
           "head_dim": base.layers[0].self_attn.head_dim}, open(out, "w"))
"""


@pytest.mark.slow
def test_the_engine_contract_holds_without_gptforge(tmp_path):
    folder = tmp_path / "lm"
    save_consumer_model(folder)
    docs = [torch.randint(2, 320, (n,)).tolist() for n in DOC_LENGTHS]
    result = run_python(ENGINE_WITHOUT_GPTFORGE, str(folder), json.dumps(docs), tmp_path=tmp_path, hide_gptforge=True)
    assert result["module"].startswith("transformers_modules.")
    scaling = result["head_dim"] ** -0.5
    assert result["calls"] == [[0, scaling, True, "batch-7"], [1, scaling, True, "batch-7"]]
    assert result["max_diff"] <= 1e-5
