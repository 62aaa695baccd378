"""The ``icrm`` command line: parse options, call the library, report errors.

Every option can also come from ``--config file.yaml`` (the command line
wins). A user mistake prints one line and exits 2; any other failure exits 1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from ..errors import TrainingStopped, UserError
from ..modeling import ModelSpec
from ..outputs import JSON_LOGS, console, set_quiet
from ..policy import DPOSettings, GRPOSettings, SamplingConfig
from ..serve import ServeConfig
from ..settings import SettingError
from ..training import ICRMArguments, TrainingOptions
from .options import option

# Plain click help (rich_markup_mode=None): rich's option table cuts long option names at 80 columns.
app = typer.Typer(
    help="Reward models with intra-trajectory consistency regularization (ICRM).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Make data files (embedded synthetic tasks, converters).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(data_app, name="data")


def _load_config(ctx: typer.Context, param, value: Optional[Path]):
    """Eager ``--config``: YAML values become the defaults of the other options."""
    if value is None:
        return value
    try:
        loaded = yaml.safe_load(Path(value).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise typer.BadParameter(f"{value}: cannot read config ({err.__class__.__name__})") from err
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{value}: expected a mapping of option names to values")
    names = {}
    for p in ctx.command.params:
        names[p.name] = p.name  # a settings field name (learning_rate) as well as its flag (lr)
        for opt in p.opts:
            names[opt.lstrip("-").replace("-", "_")] = p.name
    defaults = {}
    for key, val in loaded.items():
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            raise typer.BadParameter(f"{value}: unknown option {key!r}")
        defaults[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


ConfigOption = typer.Option(
    None, "--config", help="YAML file of option values (command line wins).", is_eager=True, callback=_load_config
)


def guarded(fn):
    """Run a command, mapping user errors to one line + exit 2, others to exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SettingError as err:  # the library names the field; the command line names the option
            _fail(err.as_flag(), 2)
        except UserError as err:
            _fail(str(err), 2)
        except TrainingStopped as err:
            _fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except typer.Exit:
            raise
        except Exception as err:  # noqa: BLE001 — the last line of defence
            if os.environ.get("ICRM_DEBUG"):
                raise
            _fail(f"{err.__class__.__name__}: {err} (set ICRM_DEBUG=1 for a traceback)", 1)

    return wrapper


def _fail(message: str, code: int) -> None:
    message = " ".join(message.split())
    if JSON_LOGS["value"]:
        print(json.dumps({"level": "error", "message": message, "exit_code": code}), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _report(payload: dict, notes: Optional[dict] = None) -> None:
    """Final summary of a command, as text (counts with what they mean) or one JSON line."""
    if JSON_LOGS["value"]:
        print(json.dumps(payload, default=str))
    else:
        for key, value in payload.items():
            note = (notes or {}).get(key)
            console.print(f"[bold]{key}[/bold]: {value}" + (f"  [dim]({note})[/dim]" if note else ""), soft_wrap=True)


SKIPPED_NOTE = {"skipped_rows": "invalid rows skipped by --skip-invalid"}


def _length_summary(counts: dict) -> tuple[dict, dict]:
    """The length-limit counts of eval/score/bon (the nonzero ones), and what they mean."""
    shown = {"max_length": counts["max_length"] or "none"} if "max_length" in counts else {}
    shown.update({k: counts[k] for k in ("truncated", "dropped_over_length", "skipped_rows") if counts.get(k)})
    notes = {
        "max_length": "tokens of prompt+response; set with --max-length",
        "truncated": "responses whose prompt lost tokens from the left to fit",
        "dropped_over_length": "rows skipped: a response alone is longer than max_length",
        **SKIPPED_NOTE,
    }
    return shown, notes


@app.callback()
def main_options(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or info logs."),
    log_format: str = typer.Option("text", "--log-format", help="text or json."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, show_default=False,
        help="CPU threads for torch [default: $ICRM_THREADS, else $OMP_NUM_THREADS, else the free cores, at most 4].",
    ),
):
    from ..threads import default_threads, set_threads

    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    JSON_LOGS["value"] = log_format == "json"
    set_quiet(quiet or log_format == "json")
    try:
        set_threads(threads or default_threads())
    except UserError as err:
        _fail(str(err), 2)
    _quiet_libraries()


def _quiet_libraries() -> None:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "datasets", "peft", "accelerate", "torch", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass


# ----------------------------------------------------------------- options

ModelOpt = option(ModelSpec, "name", "-m")
LoraROpt = option(ModelSpec, "lora_r")
LoraAlphaOpt = option(ModelSpec, "lora_alpha")
MaxLenOpt = option(DPOSettings, "max_length")
ScoreMaxLenOpt = typer.Option(
    None, "--max-length", show_default=False,
    help="Max tokens of prompt+response; a longer prompt loses tokens from the left, a longer response is an error "
         "(or skipped with --skip-invalid) [default: the model's position limit].",
)
TruncOpt = option(ICRMArguments, "truncation")
SeedOpt = option(TrainingOptions, "seed")
SplitOpt = typer.Option(None, "--split", help="Split of a saved or hub dataset [default: train].")
ScoreBatchOpt = typer.Option(16, "--batch-size", help="Sequences per forward pass.")
GradCkptOpt = option(DPOSettings, "gradient_checkpointing")
SkipOpt = option(DPOSettings, "skip_invalid")
TrustOpt = option(ModelSpec, "trust_remote_code")
PickleOpt = option(ModelSpec, "allow_pickle")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run of the same command and output.")
StepSepOpt = option(ICRMArguments, "step_separator", show_default="'\\n'")
OverwriteOpt = typer.Option(
    False, "--overwrite",
    help="Replace an existing --output file, or a folder this command did not write (without it, only an empty "
    "folder or this command's earlier output folder is replaced).",
)


PackingOpt = option(ICRMArguments, "padding_free", "--packing/--no-packing")


def _training_options(command: str) -> dict:
    """The ``TrainingArguments`` options of ``command``, with its recipe's defaults (:class:`TrainingOptions`)."""
    recipe = TrainingOptions.recipe(command)
    return {f.name: option(recipe, f.name) for f in dataclasses.fields(TrainingOptions)}


TRAINING_OPTIONS = {command: _training_options(command) for command in ("train", "sft", "dpo", "grpo")}


# ----------------------------------------------------------------- commands


@app.command()
@guarded
def sft(
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or stepwise data."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    model: str = ModelOpt,
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["sft"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["sft"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["sft"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["sft"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["sft"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["sft"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["sft"]["lr_scheduler_type"],
    max_length: int = MaxLenOpt,
    truncation: str = TruncOpt,
    seed: int = TRAINING_OPTIONS["sft"]["seed"],
    bf16: bool = TRAINING_OPTIONS["sft"]["bf16"],
    save_steps: int = TRAINING_OPTIONS["sft"]["save_steps"],
    resume: bool = ResumeOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    responses: str = typer.Option(
        "chosen", "--responses",
        help="Which responses to learn: chosen|rejected|both (pointwise, stepwise: correct|all). "
        "A policy: chosen. A generator for --generator: both.",
    ),
    step_separator: str = StepSepOpt,
    packing: Optional[bool] = PackingOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a causal LM (generator, policy) by SFT.

    On the chosen, rejected or all responses (--responses).
    """
    from transformers import TrainingArguments

    from ..commands.sft import train_sft

    training = TrainingOptions(
        num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
        save_steps=save_steps,
    )
    args = TrainingArguments(output_dir=str(output), **training.trainer_kwargs())
    spec = ModelSpec(model, lora_r, lora_alpha, trust_remote_code, allow_pickle)
    metrics = train_sft(
        data, str(output), args, spec, max_length, truncation, skip_invalid, resume, responses, step_separator, packing,
        overwrite=overwrite,
    )
    _report({"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]})


@app.command()
@guarded
def train(
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or stepwise training data."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (the reward model)."),
    model: str = ModelOpt,
    method: str = option(ICRMArguments, "method"),
    generator: str = option(ICRMArguments, "generator"),
    generator_temperature: Optional[float] = option(ICRMArguments, "generator_temperature"),
    generator_top_p: Optional[float] = option(ICRMArguments, "generator_top_p"),
    head_dropout: float = option(ICRMArguments, "head_dropout"),
    lambda_: Optional[float] = option(ICRMArguments, "lambda_"),
    sft_weight: Optional[float] = option(ICRMArguments, "sft_weight"),
    sft_backbone_grad: float = option(ICRMArguments, "sft_backbone_grad"),
    center_rewards: float = typer.Option(
        0.0, "--center-rewards-coefficient", help="TRL's centering: adds c·mean((R_c + R_r)²) to pin the scale."
    ),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Data to evaluate on (same format)."),
    step_separator: str = StepSepOpt,
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["train"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["train"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["train"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["train"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["train"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["train"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["train"]["lr_scheduler_type"],
    max_length: int = MaxLenOpt,
    truncation: str = TruncOpt,
    seed: int = TRAINING_OPTIONS["train"]["seed"],
    bf16: bool = TRAINING_OPTIONS["train"]["bf16"],
    logging_steps: int = TRAINING_OPTIONS["train"]["logging_steps"],
    save_steps: int = TRAINING_OPTIONS["train"]["save_steps"],
    resume: bool = ResumeOpt,
    no_group_by_length: bool = typer.Option(
        False, "--no-group-by-length", help="Random batches instead of rows of similar length (more padding)."
    ),
    cache_dir: Optional[str] = option(ICRMArguments, "cache_dir"),
    activation_checkpointing: bool = GradCkptOpt,
    padding_free: Optional[bool] = PackingOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a reward model (BT or pointwise, + ICRM).

    Bradley–Terry (pairwise) or BCE (pointwise) loss, with the consistency and SFT regularizers.
    """
    from ..commands.train import train_reward_model
    from ..training import ICRMConfig

    if warmup_steps < 0:
        raise typer.BadParameter("--warmup must be >= 0")
    reward_config = ICRMConfig(
        output_dir=str(output),
        method=method,
        lambda_=lambda_,
        sft_weight=sft_weight,
        sft_backbone_grad=sft_backbone_grad,
        center_rewards_coefficient=center_rewards,
        generator=generator,
        generator_temperature=generator_temperature,
        generator_top_p=generator_top_p,
        head_dropout=head_dropout,
        cache_dir=cache_dir,
        max_length=max_length,
        truncation=truncation,
        step_separator=step_separator,
        eval_strategy="epoch" if eval_data else "no",
        activation_checkpointing=activation_checkpointing,
        padding_free=padding_free,
        **TrainingOptions(
            num_train_epochs=num_train_epochs, max_steps=max_steps,
            per_device_train_batch_size=per_device_train_batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
            warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
            logging_steps=logging_steps, save_steps=save_steps,
        ).trainer_kwargs(group_by_length=not no_group_by_length),
    )
    spec = ModelSpec(model, lora_r, lora_alpha, trust_remote_code, allow_pickle)
    metrics = train_reward_model(data, str(output), reward_config, spec, eval_data, skip_invalid, resume, overwrite)
    summary = {"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]}
    if "eval_accuracy" in metrics:
        summary["eval_accuracy"] = round(metrics["eval_accuracy"], 4)
    _report(summary)


@app.command("eval")
@guarded
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise rows, or RewardBench 2 rows (chosen/rejected lists)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="metrics.json to write (+ a margin plot for pairs)."
    ),
    ties: str = typer.Option(
        "half", "--ties", help="A tie at the top: half (split credit; RewardBench 2's rule) or loss (RewardBench 1's)."
    ),
    step_threshold: float = typer.Option(
        0.5, "--step-threshold", help="Stepwise data: a step is predicted wrong when σ(r) is below this."
    ),
    step_separator: str = StepSepOpt,
    split: Optional[str] = SplitOpt,
    batch_size: int = ScoreBatchOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N rows."),
    max_length: Optional[int] = ScoreMaxLenOpt,
    packing: Optional[bool] = PackingOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Pairwise accuracy, or RewardBench 2 scores.

    Scored as their authors do: pairs per subset, RewardBench section and length bucket, with a margin histogram
    (--output); RewardBench 2 rows per subset.
    """
    from ..commands.evaluate import evaluate_pairs

    metrics = evaluate_pairs(
        model, data, output, split=split, batch_size=batch_size, limit=limit, max_length=max_length,
        skip_invalid=skip_invalid, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, ties=ties,
        step_threshold=step_threshold, step_separator=step_separator, packing=packing, overwrite=overwrite,
    )
    if "steps" in metrics:
        summary = {k: _rounded(metrics["steps"][k]) for k in ("step_auroc", "first_error_f1", "localization")}
        summary["outcome_auroc"] = _rounded(metrics["outcome"]["auroc"])
    else:
        summary = {"accuracy": round(metrics["accuracy"], 4)}
    shown, notes = _length_summary(metrics)
    _report({**summary, "n": metrics["n"], **shown, "output": str(output) if output else "-"}, notes)


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


@app.command()
@guarded
def score(
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or best-of-N data."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL with a reward per response."),
    normalize: bool = typer.Option(False, "--normalize", help="z-score with the training reward mean/std."),
    per_token: bool = typer.Option(False, "--per-token", help="Also write per-token (process) rewards r_t and Δr_t."),
    generator: Optional[str] = typer.Option(None, "--generator", help="With --per-token: add w_t from PATH or self."),
    per_step: bool = typer.Option(
        False, "--per-step", help="Also write step rewards (stepwise steps, or responses split at --step-separator)."
    ),
    step_separator: str = StepSepOpt,
    split: Optional[str] = SplitOpt,
    batch_size: int = ScoreBatchOpt,
    max_length: Optional[int] = ScoreMaxLenOpt,
    packing: Optional[bool] = PackingOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Add a reward to every response of a data file."""
    from ..commands.score import score_file

    counts = score_file(
        model, data, output, normalize=normalize, split=split, batch_size=batch_size, max_length=max_length,
        skip_invalid=skip_invalid, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
        per_token=per_token, generator=generator, per_step=per_step, step_separator=step_separator, packing=packing,
        overwrite=overwrite,
    )
    shown, notes = _length_summary(counts)
    _report({"rows": counts["rows"], **shown, "output": str(output)}, notes)


@app.command()
@guarded
def bon(
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory (icrm or any HF sequence classifier)."),
    data: str = typer.Option(..., "--data", "-d", help="Best-of-N data: prompt, candidates, labels and/or answer."),
    n: Optional[str] = typer.Option(None, "--n", help="Comma-separated n values (default 1,2,4,... up to all)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="report.json to write (+ a PNG curve)."),
    draws: int = typer.Option(32, "--draws", help="Random candidate subsets per prompt when n < all."),
    aggregate: str = typer.Option(
        "last", "--aggregate", help="Rank by step rewards: last (= the outcome reward), min or mean σ(r) of the steps."
    ),
    step_separator: str = StepSepOpt,
    seed: int = SeedOpt,
    batch_size: int = ScoreBatchOpt,
    max_length: Optional[int] = ScoreMaxLenOpt,
    packing: Optional[bool] = PackingOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Best-of-N: accuracy@n, pass@n, random@n, majority@n.

    accuracy@n picks the highest-reward of n candidates; pass@n is the oracle ceiling and random@n the floor;
    majority@n (with answers) votes on the final answer.
    """
    from ..commands.bon import best_of_n

    report = best_of_n(
        model, data, output, ns=n, n_draws=draws, seed=seed, batch_size=batch_size, max_length=max_length,
        skip_invalid=skip_invalid, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
        aggregate_steps=aggregate, step_separator=step_separator, packing=packing, overwrite=overwrite,
    )
    summary = {f"accuracy@{k}": round(v, 4) for k, v in report["accuracy"].items()}
    for metric in ("random", "majority", "pass"):
        summary.update({f"{metric}@{k}": round(v, 4) for k, v in report.get(metric, {}).items()})
    shown, notes = _length_summary(report)
    summary.update(shown)
    summary["output"] = str(output) if output else "-"
    _report(summary, notes)


@data_app.command("synth")
@guarded
def data_synth(
    task: str = typer.Option(..., "--task", help="noisy, length, suffix, arithmetic, addition or steps."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the JSONL files."),
    seed: int = SeedOpt,
    n_train: Optional[int] = typer.Option(None, "--n-train", help="Training rows [default: the task's]."),
    n_test: Optional[int] = typer.Option(None, "--n-test", help="Test rows and best-of-N prompts [default: the task's]."),
    flip: Optional[float] = typer.Option(None, "--flip", help="Share of training labels flipped."),
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Write an embedded synthetic task as ordinary data files."""
    from ..commands.data import write_task

    info = write_task(task, output, seed=seed, n_train=n_train, n_test=n_test, flip=flip, overwrite=overwrite)
    _report({"task": info["task"], "files": info["files"], "output": str(output)})


@data_app.command("gsm8k-bon")
@guarded
def data_gsm8k_bon(
    data: str = typer.Option(..., "--data", "-d", help="GSM8K example_model_solutions.jsonl(.gz)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for bon_/pointwise_ train/test files."),
    seed: int = SeedOpt,
    test_fraction: float = typer.Option(0.5, "--test-fraction", help="Share of the questions in the test files."),
    overwrite: bool = OverwriteOpt,
):
    """GSM8K graded solutions → best-of-N and pointwise files.

    Split by question, so no question is on both sides.
    """
    from ..commands.data import gsm8k_best_of_n

    counts = gsm8k_best_of_n(data, output, seed, test_fraction, overwrite)
    _report({"questions": counts, "output": str(output)})


@data_app.command("gsm8k-sft")
@guarded
def data_gsm8k_sft(
    data: str = typer.Option(..., "--data", "-d", help="GSM8K train.jsonl(.gz) with question/answer."),
    output: Path = typer.Option(..., "--output", "-o", help="Pointwise JSONL (label 1) for icrm sft."),
    overwrite: bool = OverwriteOpt,
):
    """GSM8K question/answer rows → SFT data for a generator/backbone."""
    from ..commands.data import gsm8k_sft

    _report({"rows": gsm8k_sft(data, output, overwrite), "output": str(output)})


@data_app.command("split")
@guarded
def data_split(
    data: str = typer.Option(..., "--data", "-d", help="Any pairwise/pointwise/best-of-N file."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for train.jsonl and test.jsonl."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of the prompts in test.jsonl."),
    seed: int = SeedOpt,
    overwrite: bool = OverwriteOpt,
):
    """Split a data file by prompt (no prompt on both sides) with a fixed seed."""
    from ..commands.data import split_by_prompt

    counts = split_by_prompt(data, output, test_fraction, seed, overwrite)
    _report({**counts, "output": str(output)})


@app.command()
@guarded
def demo(
    output: Path = typer.Option(Path("icrm-demo"), "--output", "-o", help="Report directory."),
    quick: bool = typer.Option(False, "--quick", help="Smaller run: no probes, no DPO loop, no process rewards (about a minute on 2 cores)."),
    overwrite: bool = OverwriteOpt,
):
    """Embedded end-to-end run on CPU, no downloads.

    Synthetic data, SFT, BT/GRM/ICRM reward models, evaluation, best-of-N verification (and, in full mode,
    the spurious-feature probes, a DPO loop and per-step rewards of BT, ICRM and a PRM on one chain),
    written as report.md with plots.
    """
    from ..commands.demo import run_demo

    metrics = run_demo(output, quick, overwrite)
    summary = {f"{m} {split}": round(acc, 3) for m, per in metrics["accuracy"].items() for split, acc in per.items()}
    summary["report"] = str(Path(output) / "report.md")
    _report(summary)


@app.command()
@guarded
def explain(
    model: list[str] = typer.Option(..., "--model", "-m", help="Reward model dir; repeat to compare models row by row."),
    output: Path = typer.Option(..., "--output", "-o", help="HTML page (or a directory, with --data)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="A prompt (with --response)."),
    response: Optional[str] = typer.Option(None, "--response", help="The response to explain (with --prompt)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Explain the first --limit rows of a data file."),
    limit: int = typer.Option(20, "--limit", help="With --data: the first N rows."),
    generator: Optional[str] = typer.Option(None, "--generator", help="Show generator probabilities w (PATH or self)."),
    png: bool = typer.Option(False, "--png", help="Also render PNGs with matplotlib."),
    max_length: Optional[int] = ScoreMaxLenOpt,
    per_step: bool = typer.Option(
        False, "--per-step", help="Mark step boundaries and scores (stepwise rows always; others split at --step-separator)."
    ),
    step_separator: str = StepSepOpt,
    skip_invalid: bool = SkipOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Per-token reward heatmap (HTML, optional PNG).

    Each response token is coloured by its reward change Δr; step scores are marked (--per-step).
    """
    from ..commands.explain import explain_to_files

    written = explain_to_files(
        model, output, prompt=prompt, response=response, data=data, limit=limit, generator=generator, png=png,
        max_length=max_length, per_step=per_step, step_separator=step_separator, skip_invalid=skip_invalid,
        overwrite=overwrite,
    )
    _report({"written": ", ".join(str(p) for p in written)})


# ------------------------------------------------------- policies (sample, DPO)

SamplingOpts = {f.name: option(SamplingConfig, f.name) for f in dataclasses.fields(SamplingConfig)}


@app.command()
@guarded
def sample(
    policy: str = typer.Option(..., "--policy", "-p", help="Policy directory (a causal LM with a chat template)."),
    prompts: str = typer.Option(..., "--prompts", help="JSONL with `prompt` (text or messages), or any data file."),
    output: Path = typer.Option(..., "--output", "-o", help="Best-of-N JSONL: prompt, candidates."),
    n: int = SamplingOpts["n"],
    temperature: float = SamplingOpts["temperature"],
    top_p: float = SamplingOpts["top_p"],
    top_k: int = SamplingOpts["top_k"],
    max_new_tokens: int = SamplingOpts["max_new_tokens"],
    engine: str = SamplingOpts["engine"],
    seed: int = SamplingOpts["seed"],
    batch_size: int = SamplingOpts["batch_size"],
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Sample N responses per prompt from a policy.

    Written as best-of-N candidates.
    """
    from ..commands.sample import sample_to_file

    sampling = SamplingConfig(n, temperature, top_p, top_k, max_new_tokens, seed, batch_size, engine)
    _report(sample_to_file(policy, prompts, output, sampling, trust_remote_code, allow_pickle, overwrite), {
        "truncated": f"samples cut at --max-new-tokens {max_new_tokens} before an end token",
        "empty_dropped": "empty samples left out of the candidates",
        "prompts_dropped": "prompts left with no candidate",
    })


@app.command("dpo-pairs")
@guarded
def dpo_pairs(
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory (the judge)."),
    data: str = typer.Option(..., "--data", "-d", help="Best-of-N candidates, e.g. from `icrm sample`."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL of prompt/chosen/rejected (TRL format)."),
    min_gap: float = typer.Option(0.0, "--min-gap", help="Keep a pair only if best - worst reward >= this."),
    exclude_prompts: Optional[str] = typer.Option(None, "--exclude-prompts", help="Drop prompts that occur in this file (e.g. a test set)."),
    batch_size: int = ScoreBatchOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Best and worst candidate per prompt as DPO pairs.

    Candidates are scored with the reward model.
    """
    from ..commands.dpo_pairs import build_dpo_pairs_file

    counts = build_dpo_pairs_file(
        model, data, output, min_gap=min_gap, exclude_prompts=exclude_prompts, batch_size=batch_size,
        skip_invalid=skip_invalid, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, overwrite=overwrite,
    )
    _report({**counts, "output": str(output)}, {
        "pairs": "prompts that gave a chosen/rejected pair",
        "overlap": "prompts left out because they occur in --exclude-prompts",
        "identical": "prompts whose candidates are all the same text",
        "tie": "prompts whose best and worst candidates have the same reward",
        "gap": f"prompts whose best-worst reward gap is below --min-gap {min_gap}",
        **SKIPPED_NOTE,
    })


@app.command()
@guarded
def dpo(
    policy: str = typer.Option(..., "--policy", "-p", help="Starting policy (also the DPO reference)."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise data, e.g. from `icrm dpo-pairs`."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    beta: float = option(DPOSettings, "beta"),
    loss_type: str = option(DPOSettings, "loss_type"),
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["dpo"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["dpo"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["dpo"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["dpo"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["dpo"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["dpo"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["dpo"]["lr_scheduler_type"],
    max_length: int = MaxLenOpt,
    gradient_checkpointing: bool = GradCkptOpt,
    logging_steps: int = TRAINING_OPTIONS["dpo"]["logging_steps"],
    seed: int = TRAINING_OPTIONS["dpo"]["seed"],
    bf16: bool = TRAINING_OPTIONS["dpo"]["bf16"],
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a policy with DPO (TRL's DPOTrainer).

    On chosen/rejected pairs, with the starting policy as the reference.
    """
    from ..commands.dpo import train_dpo

    training = TrainingOptions(
        num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
        logging_steps=logging_steps,
    ).trainer_kwargs()
    settings = DPOSettings(beta, loss_type, max_length, lora_r, lora_alpha, gradient_checkpointing, skip_invalid,
                           trust_remote_code, allow_pickle)
    metrics = train_dpo(policy, data, output, training, settings, overwrite)
    summary = {"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]}
    if metrics["final_reward_accuracy"] is not None:
        summary["reward_accuracy"] = round(metrics["final_reward_accuracy"], 4)
    _report(summary)


@app.command("compare-policies")
@guarded
def compare_policies_cmd(
    policies: list[str] = typer.Option(..., "--policies", help="Policy dirs: --policies A B C (the first is the baseline)."),
    more: Optional[list[str]] = typer.Argument(None, help="More policy dirs (so `--policies A B C` works).", show_default=False),
    prompts: str = typer.Option(..., "--prompts", help="Prompts file (or any data file)."),
    judge: str = typer.Option(..., "--judge", help="Reward model dir, or true-reward (synthetic tasks)."),
    task: Optional[str] = typer.Option(None, "--task", help="Synthetic task for true-reward (default: from task.json)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="report.json to write."),
    n: int = SamplingOpts["n"],
    temperature: float = SamplingOpts["temperature"],
    top_p: float = SamplingOpts["top_p"],
    top_k: int = SamplingOpts["top_k"],
    max_new_tokens: int = SamplingOpts["max_new_tokens"],
    engine: str = SamplingOpts["engine"],
    seed: int = SamplingOpts["seed"],
    batch_size: int = SamplingOpts["batch_size"],
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Compare policies: mean reward, win/tie/lose.

    Samples from each policy are judged by a reward model or the true reward; win/tie/lose is vs the first policy.
    """
    from ..commands.compare_policies import compare_policies

    sampling = SamplingConfig(n, temperature, top_p, top_k, max_new_tokens, seed, batch_size, engine)
    report = compare_policies(
        list(policies) + list(more or []), prompts, judge, sampling, task=task, output=output, batch_size=batch_size,
        trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, overwrite=overwrite,
    )
    if JSON_LOGS["value"] or output is None:
        print(json.dumps(report, default=str))
    else:
        for i, entry in enumerate(report["policies"]):
            versus = ("the baseline: win/tie/lose are against it" if i == 0 else
                      f"win/tie/lose vs the baseline {entry['win_rate']:.3f}/{entry['tie_rate']:.3f}/{entry['lose_rate']:.3f}")
            console.print(
                f"[bold]{entry['policy']}[/bold]: reward {entry['mean_reward']:.4f}, words {entry['mean_words']:.1f}, "
                + versus
            )
        console.print(f"[bold]output[/bold]: {output}")


# ------------------------------------------------------- online RL (serve, GRPO)


@app.command("serve")
@guarded
def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: all interfaces, no auth)."),
    port: int = typer.Option(5000, "--port", help="Port (0: any free port; the URL is printed)."),
    max_batch_size: Optional[int] = option(ServeConfig, "max_batch_size"),
    max_wait_ms: float = option(ServeConfig, "max_wait_ms"),
    max_length: Optional[int] = option(ServeConfig, "max_length"),
    max_items: int = option(ServeConfig, "max_items"),
    max_body_size: Optional[int] = option(ServeConfig, "max_body_size"),
    normalize: bool = option(ServeConfig, "normalize"),
    packing: Optional[bool] = option(ServeConfig, "packing", "--packing/--no-packing"),
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    config: Optional[Path] = ConfigOption,
):
    """Serve rewards over HTTP (OpenRLHF's /get_reward).

    Endpoints: /get_reward, /score, /health, /metrics.
    """
    from ..commands.serve import serve

    def ready(url: str) -> None:
        _report({"model": model, "url": url, "get_reward": f"{url}/get_reward"})
        sys.stdout.flush()

    settings = ServeConfig(max_batch_size, max_wait_ms, max_length, max_items, normalize, packing, max_body_size)
    serve(model, host, port, settings, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, on_ready=ready)
    _report({"stopped": model})


@app.command()
@guarded
def grpo(
    policy: str = typer.Option(..., "--policy", "-p", help="Starting policy (a causal LM with a chat template)."),
    reward_model: str = typer.Option(..., "--reward-model", "-r", help="Reward model directory (the judge)."),
    prompts: str = typer.Option(..., "--prompts", help="JSONL with `prompt` (text or messages), or any data file."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    num_generations: int = option(GRPOSettings, "num_generations"),
    max_completion_length: int = option(GRPOSettings, "max_completion_length"),
    beta: float = option(GRPOSettings, "beta"),
    loss_type: str = option(GRPOSettings, "loss_type"),
    epsilon: float = option(GRPOSettings, "epsilon"),
    scale_rewards: str = option(GRPOSettings, "scale_rewards"),
    temperature: float = option(GRPOSettings, "temperature"),
    top_p: float = option(GRPOSettings, "top_p"),
    top_k: int = option(GRPOSettings, "top_k"),
    exclude_prompts: Optional[str] = option(GRPOSettings, "exclude_prompts"),
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["grpo"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["grpo"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["grpo"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["grpo"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["grpo"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["grpo"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["grpo"]["lr_scheduler_type"],
    gradient_checkpointing: bool = option(GRPOSettings, "gradient_checkpointing"),
    logging_steps: int = TRAINING_OPTIONS["grpo"]["logging_steps"],
    seed: int = TRAINING_OPTIONS["grpo"]["seed"],
    bf16: bool = TRAINING_OPTIONS["grpo"]["bf16"],
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a policy with GRPO (TRL's GRPOTrainer).

    The reward model is the reward function.
    """
    from ..commands.grpo import train_grpo

    training = TrainingOptions(
        num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
        logging_steps=logging_steps,
    ).trainer_kwargs()
    settings = GRPOSettings(
        num_generations, max_completion_length, beta, loss_type, epsilon, scale_rewards, temperature, top_p, top_k,
        lora_r, lora_alpha, gradient_checkpointing, exclude_prompts, trust_remote_code, allow_pickle,
    )
    metrics = train_grpo(policy, reward_model, prompts, output, training, settings, overwrite)
    summary = {"output": str(output), "steps": metrics["steps"], "prompts": metrics["prompts"]}
    if metrics["final_reward"] is not None:
        summary.update(first_reward=round(metrics["first_reward"], 4), final_reward=round(metrics["final_reward"], 4))
    _report(summary)


def main() -> None:
    app()
