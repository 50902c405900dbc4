"""`gptforge serve`: Transformers' own OpenAI-compatible server running a gptforge folder.

The fast tests check the pieces in-process: why `transformers serve` alone fails, the loader that fixes it, and
continuous batching (the paged cache) against `generate`. The slow ones start the real server on a free port of
127.0.0.1 (`gptforge serve`, a subprocess the test stops), and talk to it with the `openai` client, as users would.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoTokenizer, ContinuousBatchingConfig, GenerationConfig

from gptforge import GPTForgeConfig, GPTForgeForCausalLM, GPTForgeForSequenceClassification, train_tokenizer
from gptforge.scripts import cli

# the serving extra needs transformers 5.25; older releases raise ImportError naming what they lack
serving = pytest.importorskip("gptforge.serving", exc_type=ImportError)
openai = pytest.importorskip("openai")
from transformers.cli.serving.model_manager import ModelLoader  # noqa: E402  (after the serving extra is known)
from transformers.cli.serving.utils import Modality  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PROMPTS = [
    "the quick",
    "hello world and",
    "the lazy dog",
    "more words",
    "fox",
    "quick brown fox jumps over",
    "hello",
    "dog, hello world and more",
]
NEW_TOKENS = 8
# a small paged cache: sized from the machine's memory by default, it takes far longer to set up on CPU
CB_CACHE = dict(num_blocks=16, block_size=32, max_batch_tokens=128)
SERVER_START_S = 240
REQUEST_S = 60


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A gptforge causal LM saved with a tokenizer that has a chat template."""
    corpus = ["the quick brown fox jumps over the lazy dog, hello world and more words"] * 20
    tokenizer = train_tokenizer(
        corpus, vocab_size=300, special_tokens=["<|user|>", "<|assistant|>"], model_max_length=128
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = GPTForgeConfig.from_preset(
        "tiny",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    path = tmp_path_factory.mktemp("serve") / "model"
    GPTForgeForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(folder):
    """(model, tokenizer, greedy) where greedy(ids) is `generate` on one prompt, returning the new token ids."""
    model = GPTForgeForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=0, pad_token_id=1)

    def greedy(ids: list[int]) -> list[int]:
        return model.generate(torch.tensor([ids]), generation_config=config)[0, len(ids) :].tolist()

    return model, tokenizer, greedy, config


def test_transformers_serve_alone_cannot_load_the_folder_and_gptforge_serve_can(folder):
    plain = ModelLoader(device="cpu")
    with pytest.raises(AttributeError, match="GPTForgeForCausalLM"):
        plain.load_model_and_processor(str(folder))

    model, processor = serving.GPTForgeModelLoader.from_loader(plain).load_model_and_processor(str(folder))
    assert type(model) is GPTForgeForCausalLM and model.device.type == "cpu"
    assert processor.chat_template == CHAT_TEMPLATE
    # the server's modality check: an LLM, since the processor is a plain tokenizer
    assert ModelLoader.get_model_modality(model.config, processor) == Modality.LLM


def test_continuous_batching_gives_the_tokens_of_generate(folder, reference):
    model, tokenizer, greedy, config = reference
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    results = model.generate_batch(
        prompts, generation_config=config, continuous_batching_config=ContinuousBatchingConfig(**CB_CACHE)
    )
    got = {tuple(r.prompt_ids): r.generated_tokens for r in results.values()}
    assert len(got) == len(prompts)
    for ids in prompts:
        assert got[tuple(ids)] == greedy(ids), tokenizer.decode(ids)


def test_serve_refuses_what_it_cannot_serve(tmp_path, capsys):
    GPTForgeForSequenceClassification(GPTForgeConfig.from_preset("tiny", num_hidden_layers=1)).save_pretrained(
        tmp_path / "classifier"
    )
    with pytest.raises(ValueError, match="GPTForgeForSequenceClassification; the server generates text"):
        serving.check_servable(tmp_path / "classifier")
    capsys.readouterr()  # the save's progress bar
    assert cli.main(["serve", str(tmp_path / "classifier"), "--port", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(ValueError, match="no config.json"):
        serving.check_servable(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------------------------
# the real server
# --------------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module", params=[False, True], ids=["sequential", "continuous-batching"])
def server(request, folder, tmp_path_factory):
    """An OpenAI client talking to `gptforge serve FOLDER` on a free local port; the server stops afterwards."""
    port = _free_port()
    command = [sys.executable, "-m", "gptforge.scripts.cli", "serve", str(folder), "--port", str(port)]
    command += ["--device", "cpu", "--log-level", "warning"]
    if request.param:
        command += ["--continuous-batching"] + [f"--cb-{k.replace('_', '-')}={v}" for k, v in CB_CACHE.items()]
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=REQUEST_S, max_retries=0)
    finally:
        # the server's process group: it and the model process it spawned
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.slow
def test_completions_streaming_and_not(server, folder, reference):
    _, tokenizer, greedy, _ = reference
    prompt = PROMPTS[0]
    new_ids = greedy(tokenizer(prompt)["input_ids"])
    expected = _text(tokenizer, new_ids)
    answer = server.completions.create(model=str(folder), prompt=prompt, max_tokens=NEW_TOKENS, temperature=0)
    assert (answer.choices[0].text, answer.usage.completion_tokens) == (expected, len(new_ids))
    stream = server.completions.create(
        model=str(folder), prompt=prompt, max_tokens=NEW_TOKENS, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream) == expected


@pytest.mark.slow
def test_chat_completions_streaming_and_not(server, folder, reference):
    _, tokenizer, greedy, _ = reference
    messages = [{"role": "user", "content": "hello world"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected = _text(tokenizer, greedy(ids["input_ids"]))
    answer = server.chat.completions.create(model=str(folder), messages=messages, max_tokens=NEW_TOKENS, temperature=0)
    assert answer.choices[0].message.content == expected
    stream = server.chat.completions.create(
        model=str(folder), messages=messages, max_tokens=NEW_TOKENS, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == expected


@pytest.mark.slow
def test_eight_concurrent_requests_give_the_tokens_of_generate(server, folder, reference):
    _, tokenizer, greedy, _ = reference

    def complete(prompt: str) -> tuple[str, int]:
        answer = server.completions.create(model=str(folder), prompt=prompt, max_tokens=NEW_TOKENS, temperature=0)
        return answer.choices[0].text, answer.usage.completion_tokens

    with ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:
        answers = list(pool.map(complete, PROMPTS))
    # the server returns text and a token count, not ids: both must be those of the ids `generate` gives
    new_ids = [greedy(tokenizer(prompt)["input_ids"]) for prompt in PROMPTS]
    assert answers == [(_text(tokenizer, ids), len(ids)) for ids in new_ids]
    assert len({len(ids) for ids in new_ids}) > 1  # some stop at EOS before the limit: finished requests leave
