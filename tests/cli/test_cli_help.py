"""--help reads well at 80 columns: every option described, no option name cut."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer.main
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from icrm.cli import app

COMMAND = typer.main.get_command(app)


def commands(group: TyperGroup = COMMAND, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            yield from commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


ALL = dict(commands())


def test_every_option_has_a_description():
    missing = [f"icrm {' '.join(path)} {p.opts[0]}" for path, command in ALL.items() for p in command.params
               if isinstance(p, TyperOption) and not (p.help or "").strip()]
    missing += [p.opts[0] for p in COMMAND.params if isinstance(p, TyperOption) and not (p.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("path", [()] + list(ALL), ids=lambda path: " ".join(path) or "icrm")
def test_help_at_80_columns_shows_whole_option_names(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "…" not in result.output
    commands_section = result.output.split("Commands:")[-1] if "Commands:" in result.output else ""
    assert not [line for line in commands_section.splitlines() if line.endswith("...")]  # cut command summaries
    command = COMMAND if not path else ALL[path]
    shown = set(re.findall(r"--[a-z][a-z0-9-]*", result.output))
    for param in command.params:
        for opt in param.opts + param.secondary_opts:
            if opt.startswith("--"):
                assert opt in shown, f"{opt} cut or missing in `icrm {' '.join(path)} --help`"


@pytest.mark.parametrize("path", [path for path, command in ALL.items()
                                  if any("--step-separator" in p.opts for p in command.params)], ids=" ".join)
def test_step_separator_default_is_shown_escaped(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"}, terminal_width=80)
    text = " ".join(result.output.split())
    assert "[default: ('\\n')]" in text and "[default: ]" not in text  # not a raw newline, which shows as a blank


@pytest.mark.parametrize("path", list(ALL), ids=" ".join)
def test_every_option_is_used_by_its_command(path):
    """An option the command body never reads does nothing (``icrm dpo`` once took --resume and ignored it).

    The command as written, under its decorators: the options of a settings dataclass reach it as the dataclass.
    """
    import ast
    import inspect
    import textwrap

    function = inspect.unwrap(ALL[path].callback)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    body = tree.body[0].body
    read = {node.id for statement in body for node in ast.walk(statement) if isinstance(node, ast.Name)}
    unused = [name for name in inspect.signature(function).parameters if name not in read and name != "config"]
    assert unused == []


def test_importing_the_cli_loads_neither_numpy_nor_torch():
    """``icrm --help`` and ``icrm data`` start fast: the CLI's defaults come from numpy-free modules."""
    code = "import sys, icrm.cli; print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
