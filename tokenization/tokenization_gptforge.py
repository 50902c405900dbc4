"""The gptforge tokenizer: GPT-2-style byte-level BPE on Transformers' `tokenizers` backend.

Self-contained on purpose: this file is copied flat into exported model folders as remote code, so it imports only
the standard library, `tokenizers` and `transformers` (never `gptforge`).
"""

import copy
import json
import os
import re
from collections.abc import Sequence
from typing import Any, Self

from tokenizers import AddedToken, Encoding, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE, WordLevel
from transformers import BatchEncoding, TokenizersBackend

# The special tokens every gptforge vocabulary starts with, in id order (0, 1). Keeping them first makes their ids
# stable across vocab sizes, so a config's `bos/eos/pad_token_id` never has to change when the vocab is retrained.
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

TOKENIZER_FILES = ("tokenizer.json",)
GPT2_VOCAB_FILES = ("vocab.json", "merges.txt")

_SURROGATE = re.compile("[\ud800-\udfff]")
# `__call__` and `encode` take their text arguments in this positional order.
_CALL_TEXT_ARGS = ("text", "text_pair", "text_target", "text_pair_target")
_ENCODE_TEXT_ARGS = ("text", "text_pair")


def byte_level_bpe(
    vocab: str | dict[str, int] | None = None,
    merges: str | list[tuple[str, str]] | None = None,
    add_prefix_space: bool = False,
) -> Tokenizer:
    """The `tokenizers` pipeline of GPT-2, from a vocabulary or empty (ready for a `BpeTrainer`).

    There is deliberately no normalizer: byte-level BPE can represent any UTF-8 text, and any normalisation (NFC,
    stripping, lowercasing) would break the exact `decode(encode(s)) == s` round trip. The BPE settings are the ones
    `GPT2Tokenizer` uses, so the same `vocab.json` + `merges.txt` give the same ids in both classes.
    """
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab if vocab is not None else {},
            merges=merges if merges is not None else [],
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _template_adds(post_processor: Any) -> tuple[bool, bool]:
    """Whether `post_processor` puts a special token before / after a single sequence.

    Why this exists: `from_pretrained` drops `add_bos_token` from `tokenizer_config.json` whenever a `tokenizer.json`
    is present (the template saved in `tokenizer.json` is the source of truth), so a reloaded tokenizer would prepend
    BOS while reporting `add_bos_token=False`. Running the post-processor on a one-token probe recovers the flags
    through public `tokenizers` API only, whatever kind of post-processor it is.
    """
    if post_processor is None:
        return False, False
    probe = Tokenizer(WordLevel({"x": 0}, unk_token="x")).encode("x", add_special_tokens=False)
    processed: Encoding = post_processor.process(probe)
    # `sequence_ids` is None exactly at the positions the template inserted.
    sequence_ids = processed.sequence_ids
    return sequence_ids[0] is None, sequence_ids[-1] is None


def check_text_input(value: Any, where: str, max_depth: int = 3) -> None:
    """Raise a clear error for inputs the Rust backend would reject with an opaque one.

    The base class answers `tok(123)` with a ValueError that does not say what was passed, and a lone surrogate with
    "TextInputSequence must be str" although it *is* a str. `max_depth` is how many list levels may wrap the str:
    a batch adds one, pretokenized input a second, pretokenized pairs a third.
    """
    if isinstance(value, str):
        if not value.isascii() and (match := _SURROGATE.search(value)):
            raise UnicodeEncodeError(
                "utf-8",
                value,
                match.start(),
                match.start() + 1,
                f"lone surrogate in `{where}`; surrogates are not text and have no UTF-8 form "
                "(fix the decoding that produced them, e.g. bytes.decode(errors='replace'))",
            )
        return
    if isinstance(value, (list, tuple)) and max_depth > 0:
        for index, item in enumerate(value):
            check_text_input(item, f"{where}[{index}]", max_depth - 1)
        return
    expected = "a str or a list of str" if max_depth > 0 else "a str"
    raise TypeError(f"expected `{where}` to be {expected}, got {type(value).__name__}")


def _check_text_arguments(
    names: Sequence[str], args: tuple, kwargs: dict[str, Any], required: str | None = None
) -> None:
    """Check each text argument given; `required` (the one text an entry point cannot do without) is checked even
    when it is None or missing, so `encode(None)` names `NoneType` as `encode(123)` names `int`."""
    values = {**dict(zip(names, args)), **{name: kwargs[name] for name in names if name in kwargs}}
    for name in names:
        if values.get(name) is not None or name == required:
            check_text_input(values.get(name), name)


def _invalid_json_file(folder: str) -> str:
    """Which of the folder's tokenizer files failed to parse (the Rust reader checks tokenizer.json)."""
    path = os.path.join(folder, TOKENIZER_FILES[0])
    if os.path.isfile(path):
        try:
            Tokenizer.from_file(path)
        except Exception:
            return path
    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return folder


class GPTForgeTokenizer(TokenizersBackend):
    """Byte-level BPE tokenizer for gptforge models (the GPT-2 scheme), backed by the Rust `tokenizers` library.

    Special tokens: `<|endoftext|>` is both BOS and EOS (id 0 in vocabularies trained by
    `gptforge.tokenization.train_tokenizer`), `<|pad|>` is a distinct pad token (id 1), so padding is never confused
    with a document boundary. Any extra special tokens follow, then the 256 byte symbols, then the merges.

    Round trip: `decode(encode(s)) == s` for every valid Unicode string, because the byte-level alphabet covers all
    UTF-8 bytes, there is no normalizer and `clean_up_tokenization_spaces` is off (code whitespace survives).
    Two documented edge cases:

    - Lone UTF-16 surrogates (e.g. `"\\ud800"`, usually from `bytes.decode(errors="surrogateescape")`) are not
      text and have no UTF-8 encoding: encoding them raises `UnicodeEncodeError` naming the position.
    - Decoding an id sequence that cuts a multi-byte character in half yields U+FFFD for the incomplete bytes.

    Non-string input (`tok(123)`) raises `TypeError` naming the type.

    From GPT-2-format `vocab.json` + `merges.txt` the ids equal `GPT2Tokenizer`'s. A vocabulary without `<|pad|>`
    (OpenAI's GPT-2 files) gets it appended as a new id, `len(vocab)`: resize the model's embeddings, or pass
    `pad_token="<|endoftext|>"` to keep the model's vocabulary size.

    `model_max_length` should equal the model's `max_position_embeddings`; `train_tokenizer(model_max_length=...)`
    sets it, or pass `model_max_length=config.max_position_embeddings` to `from_pretrained`.

    Args:
        vocab: GPT-2 `vocab.json` path or dict; `from_pretrained` fills it from `tokenizer.json` or `vocab.json`.
        merges: GPT-2 `merges.txt` path or list of (left, right) merges.
        bos_token, eos_token, pad_token, unk_token: as in every Transformers tokenizer. Byte-level BPE never needs
            an unknown token, hence no default.
        add_prefix_space: treat the first word like any other (as GPT-2), needed for `is_split_into_words=True`.
        add_bos_token: prepend `<|endoftext|>` to every sequence (default: as saved, else False, like GPT-2).
        add_eos_token: append `<|endoftext|>` to every sequence (default: as saved, else False).
        kwargs: passed to [`TokenizersBackend`] (`tokenizer_object`, `tokenizer_file`, `model_max_length`,
            `padding_side`, `extra_special_tokens`, ...).
    """

    vocab_files_names = {"vocab_file": GPT2_VOCAB_FILES[0], "merges_file": GPT2_VOCAB_FILES[1]}
    model_input_names = ["input_ids", "attention_mask"]
    model = BPE

    def __init__(
        self,
        vocab: str | dict[str, int] | None = None,
        merges: str | list[tuple[str, str]] | None = None,
        bos_token: AddedToken | str = EOS_TOKEN,
        eos_token: AddedToken | str = EOS_TOKEN,
        pad_token: AddedToken | str = PAD_TOKEN,
        unk_token: AddedToken | str | None = None,
        add_prefix_space: bool = False,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        clean_up_tokenization_spaces: bool = False,
        **kwargs: Any,
    ) -> None:
        tokenizer_object = kwargs.pop("tokenizer_object", None)
        tokenizer_file = kwargs.pop("tokenizer_file", None)
        if tokenizer_object is not None:
            # The base class contract: the caller's object is copied, never mutated.
            backend = copy.deepcopy(tokenizer_object)
        elif tokenizer_file is not None and os.path.isfile(tokenizer_file):
            backend = Tokenizer.from_file(tokenizer_file)
        elif vocab is not None:
            backend = byte_level_bpe(vocab, merges, add_prefix_space=add_prefix_space)
        else:
            # Not OSError: `from_pretrained` would swallow that into a message without the folder name.
            source = kwargs.get("name_or_path") or "the arguments"
            raise ValueError(
                f"GPTForgeTokenizer found no vocabulary in {source!r}: it needs {' or '.join(TOKENIZER_FILES)} "
                f"(`tokenizer_file`), or {' + '.join(GPT2_VOCAB_FILES)} (`vocab` + `merges`), or a "
                "`tokenizers.Tokenizer` (`tokenizer_object`); `gptforge.tokenization.train_tokenizer` makes one."
            )

        # `from_pretrained` hands over the template saved in tokenizer.json; otherwise the backend's own applies.
        post_processor = kwargs.pop("post_processor", None)
        saved_bos, saved_eos = _template_adds(backend.post_processor if post_processor is None else post_processor)
        # Passing both flags explicitly makes the base class rebuild the template from them (`update_post_processor`).
        kwargs["add_bos_token"] = saved_bos if add_bos_token is None else add_bos_token
        kwargs["add_eos_token"] = saved_eos if add_eos_token is None else add_eos_token

        self._tokenizer = backend
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            unk_token=unk_token,
            add_prefix_space=add_prefix_space,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *init_inputs: Any, **kwargs: Any
    ) -> Self:
        """Load from a folder or Hub repo holding `tokenizer.json` (or GPT-2's `vocab.json` + `merges.txt`).

        A local folder without those files raises `FileNotFoundError` naming the folder and the files looked for;
        the base class would otherwise build a tokenizer with an empty vocabulary and fail much later.
        """
        folder = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        if os.path.isdir(folder):
            has_json = all(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES)
            has_gpt2 = all(os.path.isfile(os.path.join(folder, name)) for name in GPT2_VOCAB_FILES)
            if not (has_json or has_gpt2):
                raise FileNotFoundError(
                    f"No tokenizer files in {os.path.abspath(folder)!r}: looked for {' or '.join(TOKENIZER_FILES)}, "
                    f"or {' + '.join(GPT2_VOCAB_FILES)} (found: {sorted(os.listdir(folder)) or 'nothing'})."
                )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *init_inputs, **kwargs)
        except json.JSONDecodeError as exc:  # the base class reads the files with json.load, which names no file
            raise ValueError(f"{_invalid_json_file(folder)}: not valid JSON ({exc})") from exc

    # The three public entry points that reach the Rust backend validate their text first (see `check_text_input`).
    # They keep the base signatures by forwarding *args/**kwargs untouched.

    def __call__(self, *args: Any, **kwargs: Any) -> BatchEncoding:
        # `text` may be None only when `text_target` stands in for it (the base class's own rule)
        with_target = len(args) > 2 and args[2] is not None or kwargs.get("text_target") is not None
        _check_text_arguments(_CALL_TEXT_ARGS, args, kwargs, required=None if with_target else "text")
        return super().__call__(*args, **kwargs)

    def encode(self, *args: Any, **kwargs: Any) -> list[int]:
        _check_text_arguments(_ENCODE_TEXT_ARGS, args, kwargs, required="text")
        return super().encode(*args, **kwargs)

    def tokenize(self, *args: Any, **kwargs: Any) -> list[str]:
        _check_text_arguments(("text", "pair"), args, kwargs, required="text")
        return super().tokenize(*args, **kwargs)

    # >>> gptforge package only: removed from the flat remote-code copy (gptforge/remote_code.py)
    def save_pretrained(self, save_directory, legacy_format=None, filename_prefix=None, push_to_hub=False, **kwargs):
        """Also writes `auto_map` and the flat remote-code files, so the folder loads without gptforge installed."""
        from ..remote_code import save_pretrained_with_code

        kwargs.update(legacy_format=legacy_format, filename_prefix=filename_prefix)
        return save_pretrained_with_code(self, super().save_pretrained, save_directory, push_to_hub, **kwargs)

    # <<< gptforge package only


__all__ = ["GPTForgeTokenizer", "byte_level_bpe"]
