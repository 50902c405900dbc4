"""The training library under the `gptforge` commands: data, config building, Trainer settings, checkpoints, metrics.

- `corpus`: the embedded default data (the standard library's own source), as a corpus and a classification task;
- `sources`: loading a local file or folder, or a Hub dataset, into train and validation splits;
- `encoding`: packing texts into causal-LM blocks, encoding classification examples;
- `config`: the model config from a preset or JSON, `--set` overrides, the tokenizer's vocabulary;
- `folders`: model folders (their model type, tokenizer loading, tokenizer files);
- `lora`: wrapping a model with PEFT LoRA adapters;
- `options`: command options as dataclass fields, from which the flags and the typed `main`s derive;
- `arguments`: one `TrainingArguments` factory for pretrain and finetune;
- `checkpointing`: checkpoints that are complete or absent (the completion marker, finding, verifying);
- `distributed`, `resharding`: launch checks, FSDP2 on CPU processes, checkpoints across engines and world sizes;
- `trainer`: `GPTForgeTrainer` and the callback that marks its checkpoints complete;
- `muon`: Muon for the hidden matrices with AdamW for the rest, as one optimizer Trainer builds and checkpoints;
- `resume`: what `--resume` and `--overwrite` do to a run folder, and what a resumed run keeps;
- `evaluation`: perplexity on texts, with a sliding window over texts longer than the context;
- `metrics`: the JSON-lines log, the loss plot, classification scores and the confusion matrix.
"""
