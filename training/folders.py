"""Model folders: what kind of model a folder holds, loading its tokenizer (and what it adds), copying its files."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import UsageError

# native Transformers model types that `gptforge convert` reads (and `finetune` converts on the fly)
SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "qwen3")
# tokenizer files copied byte for byte between gptforge and native folders (tokenizer_config.json is rewritten)
TOKENIZER_COPY_FILES = ("tokenizer.json", "special_tokens_map.json", "chat_template.jinja")
# a folder holding none of these has no tokenizer to load
TOKENIZER_MARKERS = ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json")


def source_model_type(folder: str | os.PathLike) -> str:
    """The `model_type` in `folder/config.json`; `FileNotFoundError` naming the file when there is none."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise UsageError(
            f"no model at {str(folder)!r}: looked for {str(config_path)!r} (a folder written by save_pretrained)"
        )
    return json.loads(config_path.read_text()).get("model_type", "")


def copy_present(folder: Path, out: Path, names: tuple[str, ...]) -> list[Path]:
    """Copy each of `names` that exists in `folder` into `out`, byte for byte; returns the copies."""
    written = []
    for name in names:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
            written.append(out / name)
    return written


def require_tokenizer_folder(path: str | os.PathLike) -> None:
    """`UsageError` naming the folder and what it holds when `path` has no tokenizer files to load."""
    folder = Path(path)
    if folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_MARKERS):
        return
    found = sorted(p.name for p in folder.iterdir())[:8] if folder.is_dir() else None
    raise UsageError(
        f"no tokenizer at {str(path)!r}: expected a folder with tokenizer.json (or vocab.json + merges.txt), as "
        "`gptforge train-tokenizer` and save_pretrained write"
        + ("" if found is None else f"; the folder holds {found or 'nothing'}")
    )


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The folder's tokenizer, with a pad token (its EOS) when it has none: batches are padded, padding is masked."""
    from transformers import AutoTokenizer

    require_tokenizer_folder(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def adds_bos(tokenizer: Any) -> bool:
    """Whether `tokenizer(text)` puts exactly one BOS before the text's own tokens.

    Asked of the encoding, not of `tokenizer.add_bos_token`: a folder loaded as a plain `TokenizersBackend` (or
    `PreTrainedTokenizerFast`) reports False while the template in its tokenizer.json still prepends BOS.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return tokenizer("a")["input_ids"][: len(plain) + 1] == [bos, *plain]
