"""The ``icrm`` app: the command groups, global options, ``--config`` files, errors and the final summary.

Every option can also come from ``--config file.yaml`` (the command line
wins). A user mistake prints one line and exits 2; any other failure exits 1.
Commands register themselves on :data:`app` from their modules in this package.
"""

from __future__ import annotations

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
from ..outputs import JSON_LOGS, console, set_quiet
from ..settings import SettingError

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


def command(name: Optional[str] = None, group: typer.Typer = app):
    """Register a command on ``group`` (``icrm`` itself unless named), its errors reported as :func:`guarded` does."""
    return lambda fn: group.command(name)(guarded(fn))


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


def print_summary(payload: dict, notes: Optional[dict] = None) -> None:
    """Final summary of a command, as text (counts with what they mean) or one JSON line."""
    if JSON_LOGS["value"]:
        print(json.dumps(payload, default=str))
    else:
        for key, value in payload.items():
            note = (notes or {}).get(key)
            console.print(f"[bold]{key}[/bold]: {value}" + (f"  [dim]({note})[/dim]" if note else ""), soft_wrap=True)


SKIPPED_NOTE = {"skipped_rows": "invalid rows skipped by --skip-invalid"}


def length_summary(counts: dict) -> tuple[dict, dict]:
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
