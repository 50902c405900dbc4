"""Upload a saved gptforge folder to the Hugging Face Hub, with a model card when it has none.

Usage:

    gptforge push runs/tiny/final --repo-id me/tiny-stories --dry-run     # list the files and sizes, upload nothing
    gptforge push runs/tiny/final --repo-id me/tiny-stories --private
    gptforge push runs/tiny/final --repo-id me/tiny-stories --revision v1  # to a branch (created if missing)

Authentication is the usual `huggingface_hub` one (`hf auth login` or `HF_TOKEN`). What is uploaded is exactly the
folder's files (hidden files and `__pycache__` excepted) plus README.md, which is generated when missing: YAML front
matter, the architecture, the figures `pretrain`/`finetune` recorded (`training_summary.json`), usage for both ways
of loading, and what `trust_remote_code=True` means. A folder holding a pickle file (weights or anything else) is
refused: loading a pickle can run arbitrary code. The folders `pretrain`, `finetune`, `convert` and `export` write
hold none and upload as they are.
"""

import glob
import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from ..run_files import ADAPTER_CONFIG
from ..training.errors import UsageError
from ..training.options import option, typed_main

HELP = "upload a saved gptforge folder to the Hugging Face Hub (writes a model card when missing)"
README = "README.md"
# files that unpickle on load (loading them can run arbitrary code): never uploaded
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# the pickled files that hold weights, by name: they have a safetensors equivalent
PICKLED_WEIGHT_PREFIXES = ("pytorch_model", "model", "adapter_model", "tf_model", "flax_model")


@dataclass(frozen=True)
class UploadFile:
    path: str  # relative to the folder, with "/" separators
    size: int  # bytes
    generated: bool = False  # the model card, written by this command


def folder_files(folder: Path) -> list[UploadFile]:
    """The files of `folder` that are uploaded, sorted; refuses pickle files (weights or not)."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if path.suffix in PICKLE_SUFFIXES:
            raise UsageError(pickle_refusal(path))
        files.append(UploadFile(relative.as_posix(), path.stat().st_size))
    if not any(f.path in ("config.json", ADAPTER_CONFIG) for f in files):
        raise UsageError(
            f"{folder} has no config.json (nor a PEFT {ADAPTER_CONFIG}): save a model there with save_pretrained first"
        )
    return files


def pickle_refusal(path: Path) -> str:
    """Why `path` is not uploaded, naming what it is: pickled weights, or another pickled file."""
    reason = f"{path} is a pickle file ({path.suffix}), and loading a pickle can run arbitrary code; push uploads none"
    if path.stem.startswith(PICKLED_WEIGHT_PREFIXES) or path.suffix in (".pt", ".pth", ".ckpt"):
        return f"{reason}. For weights: load the model and save_pretrained it again, which writes safetensors"
    return f"{reason}. Keep what it holds as JSON, or move it out of the folder"


def format_size(size: int) -> str:
    scaled = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if scaled < 1000 or unit == "GB":
            return f"{scaled:.0f} {unit}" if unit == "B" else f"{scaled:.1f} {unit}"
        scaled /= 1000
    raise AssertionError("unreachable")


@dataclass
class PushOptions:
    """Every flag of `gptforge push`, and the keywords of `main`."""

    folder: str | os.PathLike = option(
        help="folder written by save_pretrained (model, tokenizer, code)", positional=True
    )
    repo_id: str = option(help="Hub repo, e.g. 'me/tiny-stories'; created if missing")
    _: KW_ONLY
    private: bool = option(False, "create the repo private")
    revision: str | None = option(None, "branch to upload to (created if missing); default main")
    dry_run: bool = option(False, "print the files and sizes; upload and write nothing")
    commit_message: str | None = option(None, "commit message (default: 'Upload gptforge model')")
    # --- model card (used only when the folder has no README.md) ---
    license: str | None = option(None, "license id for the card (default: apache-2.0)")
    datasets: list[str] | None = option(None, "training dataset id (repeatable)", flags=["--dataset"])
    base_model: str | None = option(None, "the model this one was fine-tuned from")


@typed_main(PushOptions)
def main(options: PushOptions) -> list[UploadFile]:
    """Upload `folder` to the model repo `repo_id` (created if missing), or with `dry_run` only print what would be
    uploaded. Returns the uploaded (or would-be uploaded) files."""
    from huggingface_hub import HfApi

    from ..model_card import card_for_folder

    folder, repo_id, private, revision = options.folder, options.repo_id, options.private, options.revision
    dry_run, commit_message = options.dry_run, options.commit_message
    license, datasets, base_model = options.license, options.datasets, options.base_model
    folder = Path(folder)
    files = folder_files(folder)
    card = None
    if not (folder / README).is_file():
        card = card_for_folder(folder, repo_id, license=license, datasets=datasets, base_model=base_model)
        files = sorted([*files, UploadFile(README, len(card.encode()), generated=True)], key=lambda f: f.path)

    target = (
        f"model repo {repo_id}" + (" (private)" if private else "") + (f", revision {revision}" if revision else "")
    )
    print(f"{'dry run: would upload' if dry_run else 'uploading'} {len(files)} files to {target}:")
    for f in files:
        note = "  (model card, generated)" if f.generated else ""
        print(f"  {f.size:>14,} B  {format_size(f.size):>9}  {f.path}{note}")
    print(f"  {sum(f.size for f in files):>14,} B  total")
    if dry_run:
        return files

    if card is not None:
        (folder / README).write_text(card, encoding="utf-8")
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private or None, repo_type="model", exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or "Upload gptforge model",
        allow_patterns=[glob.escape(f.path) for f in files],
    )
    print(f"uploaded: {getattr(commit, 'commit_url', commit)}")
    return files
