"""The fixed names in a run folder: written by `gptforge pretrain` and `finetune`, read by the model card.

    OUT/final/                    FINAL_DIR: the model and its tokenizer, loadable with the Auto classes
        training_summary.json     TRAINING_SUMMARY_FILE: the figures the model card quotes
        training_args.json        TRAINING_ARGS_FILE: Trainer's arguments as JSON (the pickled ones are removed)
    OUT/metrics.jsonl             METRICS_FILE: one JSON object per log or evaluation
    OUT/recipe.json               RECIPE_FILE: pretrain's recipe and the values it resolved to (read by --resume)
    OUT/loss.png                  LOSS_PLOT: train and validation loss
    OUT/tokenizer/                TOKENIZER_DIR: pretrain's own tokenizer, trained when none is given
    OUT/checkpoints/              CHECKPOINTS_DIR: finetune's checkpoints (pretrain's sit in OUT itself)
    OUT/base/                     BASE_DIR: finetune's conversion of a native GPT-2 or Llama folder
    OUT/adapter/                  ADAPTER_DIR: finetune --lora's PEFT adapter
        adapter_config.json       ADAPTER_CONFIG: PEFT's config, which tells an adapter folder from a model folder
    OUT/confusion.png             CONFUSION_PLOT: a classifier's validation confusion matrix
    OUT/results.json              RESULTS_FILE: finetune's final figures

Here, in the package root, because `gptforge.model_card` reads them and imports nothing from `gptforge.training`
(which imports the package root, never the other way).
"""

FINAL_DIR = "final"
TRAINING_SUMMARY_FILE = "training_summary.json"
TRAINING_ARGS_FILE = "training_args.json"
METRICS_FILE = "metrics.jsonl"
RECIPE_FILE = "recipe.json"
LOSS_PLOT = "loss.png"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_DIR = "checkpoints"
BASE_DIR = "base"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
CONFUSION_PLOT = "confusion.png"
RESULTS_FILE = "results.json"
