"""`--output` never deletes what icrm did not write (issue 22, item 1).

Every command that writes a folder or a file is run against an existing
target. The models and data it names do not exist, so a command that got past
the output check would fail with another message: the output error proves the
check comes before any loading, and the listing proves nothing was created.
"""

from __future__ import annotations

import json
import os

import pytest
from helpers import write_jsonl

from icrm.errors import UserError
from icrm.outputs import OUTPUT_MARKER, check_output, mark_output, output_kind

M, D = "missing-model", "missing.jsonl"  # neither exists: loading either fails with a different error
FOLDER_COMMANDS = {  # kind (the command) -> arguments before --output
    "train": ["train", "--data", D, "--model", M],
    "sft": ["sft", "--data", D, "--model", M],
    "dpo": ["dpo", "--policy", M, "--data", D],
    "grpo": ["grpo", "--policy", M, "--reward-model", M, "--prompts", D],
    "explain": ["explain", "--model", M, "--data", D],
    "demo": ["demo", "--quick"],
    "data synth": ["data", "synth", "--task", "noisy", "--n-train", "0"],  # a bad size fails after the check
    "data split": ["data", "split", "--data", D],
    "data gsm8k-bon": ["data", "gsm8k-bon", "--data", D],
    "convert": ["convert", "--model", M],
}
FILE_COMMANDS = {
    "eval": ["eval", "--model", M, "--data", D],
    "score": ["score", "--model", M, "--data", D],
    "bon": ["bon", "--model", M, "--data", D],
    "explain page": ["explain", "--model", M, "--prompt", "p", "--response", "r"],
    "sample": ["sample", "--policy", M, "--prompts", D],
    "dpo-pairs": ["dpo-pairs", "--model", M, "--data", D],
    "compare-policies": ["compare-policies", "--policies", M, "--prompts", D, "--judge", M],
    "data gsm8k-sft": ["data", "gsm8k-sft", "--data", D],
}
ALL = {**FOLDER_COMMANDS, **FILE_COMMANDS}


def test_every_writing_command_is_covered():
    from typer.main import get_command

    from icrm.cli import app

    def writers(group, prefix=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from writers(command, (*prefix, name))
            elif any("--output" in p.opts for p in command.params):
                yield " ".join((*prefix, name))
                assert any("--overwrite" in p.opts for p in command.params), name

    covered = {args[0] if args[0] != "data" else f"data {args[1]}" for args in ALL.values()}
    assert set(writers(get_command(app))) == covered


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory (relative paths, and `--output .`, land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_demo_run(monkeypatch):
    """The demo fails at its first stage, as a missing model fails the others, so a test never runs it whole."""
    import icrm.commands.demo.run

    def stop(*args, **kwargs):
        raise UserError("demo stopped by the test")

    monkeypatch.setattr(icrm.commands.demo.run, "preference_task", stop)


def snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("name", ALL)
def test_a_foreign_folder_is_refused_and_untouched(name, cli, workdir):
    (workdir / "X").mkdir()
    (workdir / "X" / "notes.txt").write_text("notes\n")
    before = snapshot(workdir)
    line = one_error_line(cli(*ALL[name], "--output", "X"))
    if name in FOLDER_COMMANDS:
        assert line == f"error: X exists and is not an icrm {name} output; pass --overwrite to replace it, " \
                       "or choose another --output"
    else:
        assert line == "error: --output X is a folder; give a file path"
    assert snapshot(workdir) == before


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("target", [".", "..", "~"])
def test_the_working_directory_and_home_are_refused_even_with_overwrite(name, target, cli, workdir, monkeypatch):
    monkeypatch.setenv("HOME", str(workdir / "home"))
    (workdir / "home").mkdir()
    (workdir / "notes.txt").write_text("notes\n")
    before = snapshot(workdir)
    output = str(workdir / "home") if target == "~" else target
    line = one_error_line(cli(*ALL[name], "--output", output, "--overwrite"))
    assert "icrm never replaces it" in line
    assert ("the home folder" if target == "~" else "the working directory") in line
    assert snapshot(workdir) == before


@pytest.mark.parametrize("name", FILE_COMMANDS)
def test_an_existing_file_needs_overwrite(name, cli, workdir):
    (workdir / "out.json").write_text("mine\n")
    line = one_error_line(cli(*FILE_COMMANDS[name], "--output", "out.json"))
    assert line == "error: out.json exists; pass --overwrite to replace it, or choose another --output"

    result = cli(*FILE_COMMANDS[name], "--output", "out.json", "--overwrite")  # past the check: the missing input fails
    assert result.exit_code != 0 and "--overwrite" not in result.stderr and "out.json" not in result.stderr
    assert (workdir / "out.json").read_text() == "mine\n"  # nothing written yet


@pytest.mark.parametrize("name", FOLDER_COMMANDS)
def test_only_the_same_commands_output_is_replaced_without_overwrite(name, cli, workdir, no_demo_run):
    other = "sft" if name == "train" else "train"
    (workdir / "X").mkdir()
    mark_output(workdir / "X", other)
    line = one_error_line(cli(*FOLDER_COMMANDS[name], "--output", "X"))
    assert line == f"error: X is an icrm {other} output, not {name}; pass --overwrite to replace it, " \
                   "or choose another --output"

    for marked, extra in ((name, ()), (other, ("--overwrite",))):  # both get past the check, to the missing input
        mark_output(workdir / "X", marked)
        before = snapshot(workdir)
        result = cli(*FOLDER_COMMANDS[name], "--output", "X", *extra)
        assert result.exit_code != 0 and "--overwrite" not in result.stderr, result.output
        assert snapshot(workdir) == before  # a failed run replaces nothing and leaves no staging folder


def test_a_plot_beside_a_report_is_protected_too(cli, workdir):
    (workdir / "metrics_margins.png").write_bytes(b"my plot")
    line = one_error_line(cli("eval", "--model", M, "--data", D, "--output", "metrics.json"))
    assert line.startswith("error: metrics_margins.png exists; pass --overwrite")
    (workdir / "report.png").write_bytes(b"my plot")
    line = one_error_line(cli("bon", "--model", M, "--data", D, "--output", "report.json"))
    assert line.startswith("error: report.png exists; pass --overwrite")


# ----------------------------------------------------------------- real runs


def test_train_rerun_replaces_its_own_output_and_overwrite_a_foreign_one(cli, workdir, hh_slice):
    args = ["train", "--data", hh_slice, "--method", "bt", "--max-steps", "1", "--batch-size", "2",
            "--max-length", "96"]
    assert cli(*args, "--output", "rm").exit_code == 0
    assert output_kind(workdir / "rm") == "train"
    (workdir / "rm" / "stale.txt").write_text("from the first run\n")
    result = cli(*args, "--output", "rm")
    assert result.exit_code == 0, result.output
    assert not (workdir / "rm" / "stale.txt").exists() and (workdir / "rm" / "model.safetensors").is_file()

    (workdir / "X").mkdir()
    (workdir / "X" / "notes.txt").write_text("notes\n")
    result = cli(*args, "--output", "X", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (workdir / "X" / "notes.txt").exists() and output_kind(workdir / "X") == "train"
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_score_replaces_a_file_only_with_overwrite(cli, workdir, tiny_rm):
    tiny_rm.save_pretrained(workdir / "rm")
    data = write_jsonl(workdir / "d.jsonl", [{"prompt": "hello", "chosen": "the lazy dog", "rejected": "fox"}])
    (workdir / "scored.jsonl").write_text("mine\n")
    one_error_line(cli("score", "--model", "rm", "--data", data, "--output", "scored.jsonl"))
    assert (workdir / "scored.jsonl").read_text() == "mine\n"
    result = cli("score", "--model", "rm", "--data", data, "--output", "scored.jsonl", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "chosen_reward" in json.loads((workdir / "scored.jsonl").read_text())


def test_explain_rerun_into_its_own_folder(cli, workdir, tiny_rm):
    tiny_rm.save_pretrained(workdir / "rm")
    data = write_jsonl(workdir / "d.jsonl", [{"prompt": "hello", "chosen": "the lazy dog", "rejected": "fox"}])
    for _ in range(2):
        result = cli("explain", "--model", "rm", "--data", data, "--output", "pages")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (workdir / "pages").iterdir()) == [OUTPUT_MARKER, "example-0001.html", "index.html"]


def test_overwrite_replaces_a_link_not_what_it_points_to(cli, workdir):
    (workdir / "real").mkdir()
    (workdir / "real" / "notes.txt").write_text("notes\n")
    os.symlink(workdir / "real", workdir / "link")
    one_error_line(cli("data", "synth", "--task", "noisy", "--output", "link"))
    result = cli("data", "synth", "--task", "noisy", "--n-train", "10", "--n-test", "5", "--output", "link",
                 "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (workdir / "link").is_symlink() and (workdir / "link" / "task.json").is_file()
    assert [p.name for p in (workdir / "real").iterdir()] == ["notes.txt"]


# ----------------------------------------------------------------- the API


def test_check_output_rules(workdir):
    assert check_output("new", "train") == workdir / "new"
    (workdir / "empty").mkdir()
    assert check_output("empty", "train") == workdir / "empty"  # nothing to lose: `mkdir runs/rm` first is fine
    (workdir / "f.json").write_text("{}")
    with pytest.raises(UserError, match="give a file path"):
        check_output("empty", None, overwrite=True)
    assert check_output("f.json", None, overwrite=True) == workdir / "f.json"
    (workdir / "empty" / OUTPUT_MARKER).write_text("not json")
    assert output_kind(workdir / "empty") is None
    with pytest.raises(UserError, match="is not an icrm train output"):
        check_output("empty", "train")


def test_api_functions_take_overwrite(workdir):
    from icrm.commands.data import write_task

    (workdir / "X").mkdir()
    (workdir / "X" / "notes.txt").write_text("notes\n")
    with pytest.raises(UserError, match="X exists and is not an icrm data synth output"):
        write_task("noisy", "X", n_train=10, n_test=5)
    write_task("noisy", "X", n_train=10, n_test=5, overwrite=True)
    assert not (workdir / "X" / "notes.txt").exists() and output_kind(workdir / "X") == "data synth"
