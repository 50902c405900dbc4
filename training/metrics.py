"""Training figures: a JSON-lines log with tokens seen and perplexity, the loss plot, classification scores.

Every run folder gets `metrics.jsonl` (one object per log or evaluation) and `loss.png`; a classifier also gets
its validation confusion matrix (`confusion.png`). The scores are computed here, in numpy, so the figures do not
depend on an extra package.
"""

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from transformers import TrainerCallback  # noqa: E402


class MetricsCallback(TrainerCallback):
    """Appends every log (train and eval) to a JSON-lines file, with tokens seen and eval perplexity.

    `tokens_per_example` is the block size of a language model (None for a classifier: no tokens, no perplexity);
    tokens seen = step * per-device batch * gradient accumulation * processes * tokens per example. On resume, lines
    from beyond the resumed step (written by the interrupted run) are dropped, so the file has one history.
    `bytes_per_token` (UTF-8 bytes per scored validation token, `encoding.bytes_per_scored_token`) adds the
    validation loss in bits per byte, which compares runs with different tokenizers.
    """

    def __init__(
        self, path: str | os.PathLike, tokens_per_example: int | None, bytes_per_token: float | None = None
    ) -> None:
        self.path = Path(path)
        self.tokens_per_example = tokens_per_example
        self.bytes_per_token = bytes_per_token

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        records = [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        if self.tokens_per_example:
            global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            record["tokens"] = state.global_step * global_batch * self.tokens_per_example
        record.update(logs)
        if "eval_loss" in logs and self.tokens_per_example:  # a language model's loss (not a classifier's)
            record["eval_perplexity"] = perplexity(logs["eval_loss"])
            if self.bytes_per_token:
                record["eval_bits_per_byte"] = bits_per_byte(logs["eval_loss"], self.bytes_per_token)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """A loss in nats per token as bits per byte of the text: loss / ln 2 / (bytes per token)."""
    return loss / math.log(2) / bytes_per_token


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "loss") -> Path | None:
    """Train and validation loss against tokens seen (or steps when tokens are not recorded)."""
    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    x_key = "tokens" if all("tokens" in r for r in train + evals) else "step"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if train:
        ax.plot([r[x_key] for r in train], [r["loss"] for r in train], label="train", linewidth=1)
    if evals:
        ax.plot([r[x_key] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation")
    ax.set_xlabel("tokens seen" if x_key == "tokens" else "optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return Path(png_path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(true class, predicted class) counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_scores(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1; the macro average runs over the classes present in the labels or the predictions
    (as scikit-learn's default), a class's F1 being 2TP / (2TP + FP + FN)."""
    matrix = confusion_matrix(labels, predictions, num_classes)
    tp = np.diag(matrix).astype(float)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return {
        "accuracy": float(tp.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def plot_confusion(matrix: np.ndarray, names: list[str], png_path: str | os.PathLike, title: str) -> Path:
    """Row-normalised colours (recall per class), raw counts written in the cells."""
    fig_size = max(5.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(fig_size, fig_size * 0.85))
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            if matrix[i, j]:
                colour = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return Path(png_path)


class EpochReport(TrainerCallback):
    """One printed line per evaluation, so the per-epoch figures are visible without reading metrics.jsonl."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        epoch = f"epoch {state.epoch:.2f}" if state.epoch is not None else f"step {state.global_step}"
        if "eval_accuracy" in metrics:
            print(
                f"[{epoch}] validation accuracy {metrics['eval_accuracy']:.4f}, macro-F1 {metrics['eval_macro_f1']:.4f}, "
                f"loss {metrics['eval_loss']:.4f}"
            )
        elif "eval_loss" in metrics:
            print(
                f"[{epoch}] validation loss {metrics['eval_loss']:.4f}, perplexity {perplexity(metrics['eval_loss']):.2f}"
            )
