"""Pretrain a gptforge causal LM with Transformers' `Trainer`: a training recipe, checkpoints, resume.

The recipe (`--recipe`, training/recipes.py) is the model switches, optimizer, schedule and learning rates, on top
of the preset; flags given explicitly win over it. The default, `modern`, trains Muon + AdamW with warmup-stable-decay
and the switches the ablation kept, and its model has no native export; `--recipe modern-exportable` keeps the
native and GGUF exports, `--recipe classic` is the 2019 recipe (AdamW, warmup + cosine decay, the preset unchanged).

The model comes from a preset (`--preset tiny`), a config JSON (`--config cfg.json`, or a model folder), plus any
`--set field=value` overrides; its vocabulary size and special-token ids always come from the tokenizer. Without
`--tokenizer`, one is trained on the training split first (saved in OUT/tokenizer). Without `--data`, the corpus
is the Python standard library of the running interpreter.

Output layout:
    OUT/checkpoint-N/    model, tokenizer, optimizer, scheduler, RNG and trainer state, and the completion marker
                         written last (training/checkpointing.py): --resume reads only marked, verified checkpoints
    OUT/final/           model + tokenizer: AutoModelForCausalLM / AutoTokenizer.from_pretrained("OUT/final")
    OUT/metrics.jsonl    one JSON object per log/eval: step, tokens seen, loss, lr, eval loss, perplexity and
                         bits per byte
    OUT/recipe.json      the recipe and the values it resolved to (a resumed run keeps them)
    OUT/loss.png         train and validation loss against tokens seen

Usage:
    gptforge pretrain --out runs/tiny                                   # tiny preset on the stdlib corpus
    gptforge pretrain --out runs/tiny --tokenizer runs/tok --max-steps 300 --learning-rate 3e-3
    gptforge pretrain --out runs/x --data corpus/ --preset llama-30m --set num_hidden_layers=4 --block-size 512
    gptforge pretrain --out runs/m --recipe modern --learning-rate 1e-3   # a recipe; the flag wins over it
    gptforge pretrain --out runs/tiny --resume                          # continue from the latest checkpoint
    torchrun --nproc_per_node 2 -m gptforge.scripts.cli pretrain --out runs/ddp ...
    accelerate launch --config_file scripts/accelerate_fsdp.yaml -m gptforge.scripts.cli pretrain --out runs/fsdp ...

Ctrl-C or a crash stops training; the last complete checkpoint stays usable by `--resume`, and a NaN or infinite
loss stops the run before the optimizer applies it.
"""

import dataclasses
import json
import os
import shutil
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from ..training.errors import UsageError
from ..training.options import DataOptions, ScheduleOptions, TokenizeOptions, TrainerOptions, option, typed_main
from ..training.recipes import DEFAULT_RECIPE, RECIPES

HELP = "pretrain a causal LM (preset/config/--set) with Trainer: warmup+cosine AdamW, checkpoints, --resume"
# `GPTForgeConfig.list_presets()`, spelled out so the flags need no torch (a test keeps the two equal)
PRESET_NAMES = ["encoder", "gpt2-124m", "gpt2-355m", "llama-135m", "llama-34m", "llama-360m", "seed-encoder", "tiny"]


@dataclass
class PretrainOptions(ScheduleOptions, TrainerOptions, TokenizeOptions, DataOptions):
    """Every flag of `gptforge pretrain`, and the keywords of `main`."""

    output_dir: str | os.PathLike = option(
        help="run folder (checkpoints, final/, metrics)", flags=["--out", "--output-dir"]
    )
    _: KW_ONLY
    resume: bool = option(False, "continue from the latest complete checkpoint in --out")
    overwrite: bool = option(False, "delete checkpoints already in --out and start over")
    block_size: int = option(256, "tokens per training example (packed)")
    streaming: bool = option(
        False, "read the data as a stream (datasets streaming), packed on the fly; needs --max-steps"
    )
    max_eval_blocks: int | None = option(256, "validation blocks per evaluation (seeded subset)")
    tokenizer: str | None = option(None, "tokenizer folder; default: train one into OUT/tokenizer")
    tokenizer_vocab_size: int | None = option(None, "vocab size when training one (default: the config's)")
    preset: str | None = option(None, "named size (default: tiny)", choices=PRESET_NAMES)
    config: str | None = option(None, "config JSON file, or a folder holding config.json")
    overrides: list[str] | None = option(
        None,
        "override a config field (repeatable), e.g. --set hidden_size=256 --set tie_word_embeddings=true",
        flags=["--set"],
        metavar="FIELD=VALUE",
    )
    compile: bool = option(
        False,
        "torch.compile the whole model in the Trainer (faster steps after a first one that compiles; see README)",
    )
    recipe: str | None = option(
        None,
        f"a whole training recipe ({', '.join(RECIPES)}; default: {DEFAULT_RECIPE}): model switches, optimizer, "
        "schedule, learning rates, on top of the preset; explicit flags and --set win (README, Recipes)",
    )
    eval_steps: int = option(100, "evaluate (loss, perplexity) every N steps")
    save_steps: int = option(100, "write a checkpoint every N steps")
    save_total_limit: int | None = option(3, "keep at most this many checkpoints")


@typed_main(PretrainOptions)
def main(options: PretrainOptions) -> dict[str, Any]:
    """Pretrain and return the final figures (`global_step`, `eval_loss`, `eval_perplexity`, `final_dir`, ...).

    Everything that can be wrong with the inputs (missing data, column, block size, a folder with checkpoints but
    no `--resume`) fails here before the first step, so a long run never dies on a typo after tokenising.
    """
    from transformers import AutoModelForCausalLM, set_seed

    from ..model_card import describe_recipe
    from ..run_files import FINAL_DIR, LOSS_PLOT, METRICS_FILE, RECIPE_FILE, TOKENIZER_DIR, TRAINING_SUMMARY_FILE
    from ..training import distributed, encoding, prepared, recipes, resharding, resume, sources
    from ..training.arguments import training_arguments
    from ..training.checkpointing import find_latest_checkpoint, remove_unfinished
    from ..training.config import apply_tokenizer, build_config, check_block_size, config_fields, parse_overrides
    from ..training.folders import load_tokenizer, require_tokenizer_folder
    from ..training.metrics import MetricsCallback, plot_losses, read_metrics
    from ..training.muon import muon_for_trainer
    from ..training.options import given_fields
    from ..training.summary import keep_args_as_json
    from ..training.trainer import CompleteCheckpointCallback, GPTForgeTrainer

    distributed.check_launch()  # before anything: `accelerate launch --cpu` would train one process, not N
    out = Path(options.output_dir)
    metrics_path, png_path, final_dir = out / METRICS_FILE, out / LOSS_PLOT, out / FINAL_DIR
    own_tokenizer = out / TOKENIZER_DIR
    source = sources.describe_source(options.data)

    # --- checks that need nothing loaded ---
    if options.streaming and options.max_steps is None:
        raise UsageError("--streaming needs --max-steps: a stream has no length to count epochs by")
    # the recipe, then the flags given explicitly over it; a resumed run keeps the values it started with
    given = given_fields(options)
    recipe = recipes.resolve(options.recipe, options, given, resume.recorded_recipe(out) if options.resume else None)
    resume_from = resume.prepare_run_folder(out, resume=options.resume, overwrite=options.overwrite)
    options = dataclasses.replace(options, **{key: recipe[key] for key in recipes.TRAINING_KEYS})
    if not 0 < options.decay_fraction <= 1:
        raise UsageError(f"--decay-fraction must be in (0, 1], got {options.decay_fraction}")
    if not 0 <= options.embedding_beta1 < 1:
        raise UsageError(f"--embedding-beta1 must be in [0, 1), got {options.embedding_beta1}")
    if options.adamw_lr_ratio <= 0:
        raise UsageError(f"--adamw-lr-ratio must be > 0, got {options.adamw_lr_ratio}")
    for key in ("adamw_lr_ratio", "embedding_beta1"):
        # given with AdamW at a value other than its default, it would do nothing the user asked for
        if options.optim != "muon" and key in given and getattr(options, key) != recipes.option_default(key):
            raise UsageError(
                f"--{key.replace('_', '-')} sets the AdamW half of --optim muon; with --optim adamw every parameter "
                "trains with --learning-rate and Adam betas (0.9, 0.95)"
            )
    if options.tokenizer is not None:
        require_tokenizer_folder(options.tokenizer)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resize_note = resume.check_resume_launch(resume_from, world_size) if resume_from is not None else None
    if options.preset is not None and options.config is not None:
        raise UsageError(f"pass either --preset ({options.preset}) or --config ({options.config}), not both")
    override_values = parse_overrides(options.overrides)
    model_config = build_config(
        options.preset,
        options.config,
        override_values if resume_from else recipes.model_overrides(recipe, override_values, config_fields()),
    )
    if resume_from is not None:
        # The run continues as it was saved: flags that would change the model are an error, repeats a warning.
        model_config, ignored = resume.resumed_config(resume_from, options, override_values)
        if ignored:
            print(
                f"warning: --resume continues {resume_from.name} with its own config and tokenizer; "
                f"ignoring {', '.join(ignored)}"
            )
        override_values["vocab_size"] = model_config.vocab_size  # keep its (possibly padded) vocabulary
    check_block_size(options.block_size, model_config)

    if options.lr_schedule == "warmup_stable_decay":
        # the cooldown as a fraction of the steps: GPTForgeTrainer.create_scheduler turns it into steps
        schedule: dict[str, Any] = dict(
            lr_scheduler_type="warmup_stable_decay",
            lr_scheduler_kwargs={
                "num_decay_steps": float(options.decay_fraction),
                "decay_type": "linear",
                "min_lr_ratio": options.min_lr_ratio,
            },
        )
    else:
        schedule = dict(
            lr_scheduler_type="cosine_with_min_lr" if options.min_lr_ratio > 0 else "cosine",
            lr_scheduler_kwargs={"min_lr_rate": options.min_lr_ratio} if options.min_lr_ratio > 0 else {},
        )
    args = training_arguments(
        out,
        options,
        adam_beta1=0.9,
        adam_beta2=0.95,
        **schedule,
        eval_strategy="steps",
        eval_steps=options.eval_steps,
        save_strategy="steps",
        save_steps=options.save_steps,
        prediction_loss_only=True,  # eval needs the loss only; never gather (B, T, vocab) logits
        # Every parameter gets a gradient at every step, so DDP's per-step search for unused ones is skipped.
        ddp_find_unused_parameters=False,
        # The whole model, compiled by the Trainer (`torch.compile` around it; `trainer.model` stays the eager module,
        # so checkpoints, `save_pretrained` and `--resume` keep the eager tensor names). Not `compile_blocks`: on an
        # H200 at gpt2-124m, 16 x 1024 tokens, a Trainer step took 55.5 ms compiled whole against 96.8 ms with
        # compiled blocks (the head and loss stay eager there, and the forward's checks read back each step).
        torch_compile=options.compile,
    )

    # Under torchrun / accelerate, the main process loads, trains the tokenizer and tokenises first; the others
    # then find its tokenizer and its prepared blocks instead of racing it.
    with args.main_process_first(desc="data and tokenizer"):
        # --- tokenizer: given, reused from an earlier run of this folder, or trained now (on the data) ---
        if resume_from is not None and (resume_from / "tokenizer.json").is_file():
            tok = load_tokenizer(resume_from)  # the tokenizer the checkpoint was trained with
        elif options.tokenizer is not None:
            tok = load_tokenizer(options.tokenizer)
        elif (own_tokenizer / "tokenizer.json").is_file():
            tok = load_tokenizer(own_tokenizer)
        else:
            tok = None
        if options.streaming:
            train_blocks, eval_blocks, held_out, tok = prepared.streamed_blocks(
                options, tok, own_tokenizer, model_config
            )
        else:
            train_blocks, eval_blocks, held_out, tok = prepared.prepared_blocks(
                options, tok, own_tokenizer, model_config
            )
        apply_tokenizer(model_config, tok, override_values.get("vocab_size"))
        tok.model_max_length = model_config.max_position_embeddings
        encoding.start_documents_with_bos(tok)  # the saved folder encodes a prompt as documents were packed
    bytes_per_token = encoding.bytes_per_scored_token(eval_blocks, tok)

    # --- model ---
    set_seed(options.seed)
    model = AutoModelForCausalLM.from_config(model_config)
    model.generation_config.bos_token_id = model_config.bos_token_id
    model.generation_config.eos_token_id = model_config.eos_token_id
    model.generation_config.pad_token_id = model_config.pad_token_id
    n_params = model.num_parameters()

    trainer = GPTForgeTrainer(
        model=model,
        args=args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        data_collator=encoding.causal_lm_collator,
        processing_class=tok,
        optimizer_cls_and_kwargs=(
            # the schedule scales each group's own peak, so the AdamW half keeps its ratio to Muon's all along
            muon_for_trainer(
                args,
                lr=args.learning_rate * options.adamw_lr_ratio,
                muon_lr=args.learning_rate,
                embedding_betas=(options.embedding_beta1, args.adam_beta2),
            )
            if options.optim == "muon"
            else None
        ),
        callbacks=[
            MetricsCallback(metrics_path, tokens_per_example=options.block_size, bytes_per_token=bytes_per_token),
            CompleteCheckpointCallback(keep=options.save_total_limit),
        ],
    )
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE_FILE).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
        for leftover in remove_unfinished(out):  # checkpoints and staged saves a crash cut short
            print(f"removed {leftover.name}: its save never finished")
        if resize_note:
            print(f"note: {resize_note}")
        if held_out:
            print(held_out)
        engine = "FSDP2" if trainer.is_fsdp_enabled else ("DDP" if args.world_size > 1 else "one process")
        print(
            f"pretraining {n_params / 1e6:.2f}M parameters on "
            + ("a stream" if options.streaming else f"{len(train_blocks)} blocks")
            + f" of {options.block_size} tokens ({len(eval_blocks)} validation blocks) from {source}; "
            f"{engine}: {args.world_size} process(es) x {options.batch_size} blocks x "
            f"{options.gradient_accumulation_steps} accumulation = global batch "
            f"{options.batch_size * options.gradient_accumulation_steps * args.world_size}"
            + (f"; resuming from {resume_from.name}" if resume_from else "")
        )
        print(f"training with {describe_recipe(recipe)}")

    resume_path = None
    if resume_from is not None:
        # a sharded FSDP checkpoint resumed without FSDP, or a full one under FSDP: rewritten once, by the main process
        with args.main_process_first(local=False, desc="checkpoint layout"):
            resume_path, layout_note = resharding.resume_folder(resume_from, distributed.sharded_fsdp_launch(), out)
        if layout_note and trainer.is_world_process_zero():
            print(f"note: {layout_note}")
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_path) if resume_path else None)
    except KeyboardInterrupt:
        if trainer.is_world_process_zero():
            plot_losses(metrics_path, png_path, title=f"pretraining {out} (interrupted)")
            latest = find_latest_checkpoint(out)
            print(
                f"\ninterrupted at step {trainer.state.global_step}; "
                + (
                    f"last complete checkpoint: {latest}. Continue with --resume."
                    if latest
                    else "no complete checkpoint yet."
                )
            )
        raise

    trainer.save_model(str(final_dir))  # model, generation config, tokenizer; only the main process writes
    if trainer.is_world_process_zero():
        if resume_path is not None and resume_path != resume_from:
            shutil.rmtree(resume_path, ignore_errors=True)  # the rewritten copy served its one resume
        # Trainer pickles its arguments beside the model; a published folder holds nothing pickled, so they are
        # kept as JSON instead (TRAINING_ARGS_FILE)
        keep_args_as_json(args, final_dir)
        plot_losses(metrics_path, png_path, title=f"pretraining {out}")
    evals = [r for r in read_metrics(metrics_path) if "eval_loss" in r]
    last_eval = evals[-1] if evals else {}
    global_batch = options.batch_size * options.gradient_accumulation_steps * args.world_size
    summary = {
        "output_dir": str(out),
        "final_dir": str(final_dir),
        "num_parameters": n_params,
        "global_step": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * global_batch * options.block_size,
        "train_loss": result.training_loss,
        "eval_loss": last_eval.get("eval_loss"),
        "eval_perplexity": last_eval.get("eval_perplexity"),
        "eval_bits_per_byte": last_eval.get("eval_bits_per_byte"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "world_size": args.world_size,
        "held_out": held_out,
        "recipe": recipe,
    }
    if trainer.is_world_process_zero():
        # the figures a model card quotes (`gptforge push`); local paths stay out of a published folder
        published = {k: v for k, v in summary.items() if k not in ("output_dir", "final_dir")}
        (final_dir / TRAINING_SUMMARY_FILE).write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")
        print(
            f"done: step {summary['global_step']}, {summary['tokens_seen']:,} tokens, "
            f"validation loss {summary['eval_loss']:.4f} (perplexity {summary['eval_perplexity']:.2f}); "
            f"model in {final_dir}"
            if summary["eval_loss"] is not None
            else f"done: step {summary['global_step']}; model in {final_dir}"
        )
    return summary
