"""One source of truth for options: each command option tied to a library setting has its field's name (up to CLI
spelling), default and help; ``icrm train``'s defaults differ from ``ICRMConfig``'s only where listed, with why."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from icrm.cli import app
from icrm.evaluation import ScoringOptions
from icrm.modeling import ModelSpec
from icrm.policy import DPOSettings, GRPOSettings, SamplingConfig
from icrm.serve import ServeConfig
from icrm.settings import SettingError, flag_of, help_of
from icrm.training import ICRMArguments, ICRMConfig, TrainingOptions

# The settings each command's options come from; an option spelled as one of their fields is tied to it.
TIED = {
    "train": [ICRMArguments, TrainingOptions.recipe("train"), ModelSpec],
    "sft": [TrainingOptions.recipe("sft"), ModelSpec],
    "dpo": [DPOSettings, TrainingOptions.recipe("dpo")],
    "grpo": [GRPOSettings, TrainingOptions.recipe("grpo")],
    "sample": [SamplingConfig, ModelSpec],
    "compare-policies": [SamplingConfig, ModelSpec],
    "serve": [ServeConfig, ModelSpec],
}
# Options of those commands that belong to no library setting: files, run control, what the command reports.
# (Required options are inputs, not settings, and are left out.)
UNTIED = {"output", "config", "overwrite", "resume", "skip_invalid", "eval_data", "no_group_by_length", "responses",
          "max_length", "truncation", "step_separator", "packing", "more", "task", "host", "port"}
# icrm train's options that set ICRMConfig fields by hand: TRL's own fields, which the CLI cannot read without
# importing TRL, and which ICRMConfig keeps at TRL's defaults.
TRL_FIELDS = {"max_length": "max_length", "center_rewards": "center_rewards_coefficient",
              "activation_checkpointing": "activation_checkpointing"}
# Where `icrm train` (a recipe: the reference run) differs from ICRMConfig (a drop-in for TRL's RewardConfig).
TRAIN_DIFFERS_FROM_CONFIG = {
    "num_train_epochs": "one pass over the data, as the reference trains",
    "learning_rate": "the reference's 1e-5; TRL's 1e-4 is for its own examples",
    "warmup_steps": "the reference's 3 % warmup",
    "lr_scheduler_type": "the reference's cosine schedule",
    "seed": "0, as every icrm command; TRL's 42",
    "bf16": "off unless asked: float32 runs anywhere; TRL's default needs a bf16 GPU",
    "save_steps": "0: only the final model, no checkpoints unless --resume is wanted",
    "center_rewards_coefficient": "0.0 is TRL's None (no centering) as a number the CLI can show",
    "activation_checkpointing": "off: the tiny and small models fit without it, and it slows training",
}


def command(name: str):
    return typer.main.get_command(app).commands[name]


def tied_field(name: str, param):
    """The settings and field that ``param`` of command ``name`` is spelled as (the first of TIED's that has it)."""
    for settings in TIED[name]:
        for field in dataclasses.fields(settings):
            if param.opts[0] in ("--" + field.name.replace("_", "-"), flag_of(settings, field.name)):
                return settings, field
    return None, None


@pytest.mark.parametrize("name", sorted(TIED))
def test_options_come_from_their_settings(name):
    for param in command(name).params:
        if param.required or (name == "train" and param.name in TRL_FIELDS):  # inputs; TRL's fields: below
            continue
        settings, field = tied_field(name, param)
        if field is None:
            assert param.name in UNTIED, f"icrm {name} {param.opts[0]}: tie it to a setting or list it in UNTIED"
            continue
        assert param.opts[0] == flag_of(settings, field.name), param.name
        expected = getattr(settings, field.name) if not isinstance(settings, type) else field.default
        assert param.default == expected, param.name
        assert param.help == field.metadata["help"], param.name


def test_scoring_options_word_packing_and_skip_invalid_as_training_does():
    # ScoringOptions lives below training and policy, so it cannot borrow their help texts: it repeats them.
    assert help_of(ScoringOptions, "packing") == help_of(ICRMArguments, "padding_free")
    assert help_of(ScoringOptions, "skip_invalid") == help_of(DPOSettings, "skip_invalid")


def test_every_training_options_field_is_an_option_of_train():
    names = {p.name for p in command("train").params}
    assert {f.name for f in dataclasses.fields(TrainingOptions)} <= names
    # API-only: the generator pass's batch, and the deprecated alias (the CLI's --gradient-checkpointing sets
    # transformers' current activation_checkpointing)
    assert {f.name for f in dataclasses.fields(ICRMArguments)} - names == {"generator_batch_size", "gradient_checkpointing"}


def test_train_defaults_differ_from_icrm_config_only_where_listed():
    config = {f.name: f.default for f in dataclasses.fields(ICRMConfig)}
    config["activation_checkpointing"] = ICRMConfig(output_dir="unused", use_cpu=True).activation_checkpointing
    train = {p.name: p.default for p in command("train").params}
    cli = {f.name: train[f.name] for f in dataclasses.fields(TrainingOptions)}
    cli.update({field: train[param] for param, field in TRL_FIELDS.items()})
    cli.update({f.name: train[f.name] for f in dataclasses.fields(ICRMArguments) if f.name in train})
    differs = {name for name, value in cli.items() if value != config[name]}
    assert differs == set(TRAIN_DIFFERS_FROM_CONFIG)


def test_library_errors_name_the_field_and_the_cli_the_flag(cli, tmp_path):
    with pytest.raises(SettingError, match=r"^lambda_ must be in \[0, 1\], got 2.0$"):
        ICRMConfig(output_dir=str(tmp_path), lambda_=2.0, use_cpu=True)
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    result = cli("train", "--data", data, "--output", tmp_path / "rm", "--lambda", "2")
    assert result.exit_code == 2 and "error: --lambda must be in [0, 1], got 2.0" in result.stderr


def test_flag_of_spells_fields_as_options():
    assert flag_of(ICRMArguments, "lambda_") == "--lambda"
    assert flag_of(TrainingOptions, "per_device_train_batch_size") == "--batch-size"
    assert flag_of(ICRMConfig, "max_length") == "--max-length"  # a TRL field: the plain spelling


def test_setting_errors_word_the_field_where_the_message_places_it():
    err = SettingError(None, "max_length", "data.jsonl: every row is longer than {field} 16")
    assert str(err) == "data.jsonl: every row is longer than max_length 16"
    assert err.as_flag() == "data.jsonl: every row is longer than --max-length 16"
    assert SettingError(ICRMConfig, "lambda_", "must be >= 0").as_flag() == "--lambda must be >= 0"


def test_trl_parsers_read_icrm_config_with_the_cli_spelling_too():
    """The flag is transformers' ``aliases`` metadata: HfArgumentParser (and TrlParser) take both spellings."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ICRMConfig)
    (by_flag,) = parser.parse_args_into_dataclasses(["--output_dir", "out", "--use_cpu", "--lambda", "0.3"])
    (by_name,) = parser.parse_args_into_dataclasses(["--output_dir", "out", "--use_cpu", "--lambda_", "0.3"])
    assert by_flag.lambda_ == by_name.lambda_ == 0.3


def test_settings_options_build_each_dataclass_from_its_options():
    """One option per offered field, where the keyword stands; the command gets the dataclasses, recipe defaults kept."""
    from typer.testing import CliRunner

    from icrm.cli.options import settings_options

    seen = {}
    single = typer.Typer()

    @single.command()
    @settings_options(training=TrainingOptions.recipe("grpo"), serve=ServeConfig, exclude={"training": ("save_steps",)})
    def run(*, training: TrainingOptions, out: str = typer.Option("x", "--out"), serve: ServeConfig):
        seen.update(training=training, out=out, serve=serve)

    result = CliRunner().invoke(single, ["--lr", "0.5", "--no-packing", "--max-items", "3"])
    assert result.exit_code == 0, result.output
    assert seen == {"training": dataclasses.replace(TrainingOptions.recipe("grpo"), learning_rate=0.5), "out": "x",
                    "serve": ServeConfig(max_items=3, packing=False)}
    names = [p.name for p in typer.main.get_command(single).params]
    assert "save_steps" not in names and names.index("out") == len(dataclasses.fields(TrainingOptions)) - 1
