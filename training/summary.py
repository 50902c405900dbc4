"""What a final folder keeps of its run, as JSON: a published folder holds nothing pickled.

Trainer saves its `TrainingArguments` pickled (`training_args.bin`) beside every model it saves; loading that runs
arbitrary code, so final folders keep the arguments as `training_args.json` instead (local paths left out).
"""

import json
import os
from pathlib import Path
from typing import Any

from ..run_files import TRAINING_ARGS_FILE

# Trainer's name for its pickled arguments (transformers.trainer.TRAINING_ARGS_NAME)
PICKLED_ARGS = "training_args.bin"
# local paths: not part of what a published folder says about its training
LOCAL_KEYS = ("output_dir", "logging_dir")


def training_args_dict(args: Any) -> dict[str, Any]:
    """The arguments as plain JSON values, without the local paths."""
    values = json.loads(args.to_json_string())
    return {key: value for key, value in values.items() if key not in LOCAL_KEYS}


def keep_args_as_json(args: Any, folder: str | os.PathLike) -> Path:
    """Replace Trainer's pickled arguments in `folder` with `training_args.json`; returns the JSON file."""
    folder = Path(folder)
    (folder / PICKLED_ARGS).unlink(missing_ok=True)
    path = folder / TRAINING_ARGS_FILE
    path.write_text(json.dumps(training_args_dict(args), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
