"""The benchmarks package: every module runs as ``python -m benchmarks.<name>``, the harness's statistics and
resumable results, the shared runner as the other benchmarks call it, and the import rules (public icrm API
only; icrm never imports benchmarks)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in ("__init__", "harness"))


@pytest.fixture
def benchmarks(monkeypatch):
    """The benchmarks package, importable as from the repository root (where ``python -m`` runs it)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks

    return benchmarks


@pytest.fixture
def harness(benchmarks):
    from benchmarks import harness

    return harness


@pytest.fixture
def reproduction(benchmarks, monkeypatch):
    from benchmarks import reproduction

    monkeypatch.setitem(reproduction.SETTINGS, "epochs", 1.0)
    return reproduction


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_runs_as_a_module(name):
    """``python -m benchmarks.<name> --help`` from the repository root: imports resolve, options parse."""
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")


def test_the_modules_are_the_benchmarks_documented():
    """A new benchmark is seen by the test above; this pins that the glob is not empty or stale."""
    assert {"reproduction", "attribution", "train_throughput", "process", "dpo_loop"} <= set(SCRIPTS)


# ---------------------------------------------------------------- statistics (hand-computed values)


def test_mean_std_is_the_sample_std_scaled(harness):
    # mean 3, sample variance (4 + 1 + 0 + 1 + 4) / 4 = 2.5, std 1.5811
    assert harness.mean_std([1, 2, 3, 4, 5], scale=1.0, digits=3) == "3.000 ± 1.581"
    assert harness.mean_std([0.25, 0.75]) == "50.0 ± 35.4"  # percent by default: std = 0.5 / √2
    assert harness.mean_std([0.5]) == "50.0 (1 seed)"  # one seed has no spread
    assert harness.mean_std([]) == "–"


def test_mean_ci_is_the_95_percent_t_interval(harness):
    mean, half = harness.mean_ci([1, 2, 3, 4, 5])
    # t(0.975, df 4) = 2.776; 2.776 × 1.5811 / √5 = 1.963
    assert mean == 3 and half == pytest.approx(1.963, abs=1e-3)
    assert harness.mean_ci([7.0]) == (7.0, 0.0)
    assert harness.t95(4) == pytest.approx(2.776, abs=1e-3)
    assert harness.t95(1000) == pytest.approx(1.96, abs=2e-3)


def test_paired_difference_interval_and_seed_count(harness):
    # differences 20, 0, 40 points: mean 20, sample std 20, half-width 4.303 × 20 / √3 = 49.7; a tie is no win
    assert harness.paired([0.8, 0.7, 0.9], [0.6, 0.7, 0.5]) == "+20.0 [-29.7, +69.7] 2/3"
    assert harness.paired([2.0, 3.0], [1.0, 1.0], scale=1.0, digits=2) == "+1.50 [-4.85, +7.85] 2/2"  # 12.706 × 0.5
    assert harness.paired([0.8], [0.6]) == "+20.0 (1 seed)"
    assert harness.paired([], []) == "–"


# ---------------------------------------------------------------- results file and machine info


def test_results_file_resumes_and_refuses_other_settings(harness, tmp_path):
    path = tmp_path / "out.json"
    store = harness.ResultsFile(path, ("checks", "results"), settings={"lr": 1e-3})
    store.parts["results"].setdefault("noisy", {})["0"] = {"BT": 0.7}
    store.save()
    saved = json.loads(path.read_text())
    assert list(saved) == ["settings", "machine", "runtime_s", "checks", "results"]
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["torch"]
    assert not list(tmp_path.glob(".*partial*"))  # written through a staged file, nothing left behind

    again = harness.ResultsFile(path, ("checks", "results"), settings={"lr": 1e-3})
    assert again.parts["results"] == {"noisy": {"0": {"BT": 0.7}}}
    again.save()
    assert json.loads(path.read_text())["runtime_s"] >= saved["runtime_s"]  # runtime adds up over runs

    with pytest.raises(SystemExit, match="other settings"):
        harness.ResultsFile(path, settings={"lr": 1e-4})
    assert json.loads(path.read_text())["results"] == saved["results"]  # the old file is left as it was


def test_settings_are_the_demos(harness):
    from icrm.commands.demo import FULL

    assert harness.task_settings()["sft_epochs"] == FULL.sft_epochs
    assert harness.steps_settings()["n_train"] == FULL.steps_train
    assert harness.label_flip("noisy") == 0.25 and harness.label_flip("length") == 0.0
    harness.task_settings()["lr"] = 1.0  # a fresh dict each time: one benchmark's change is its own
    assert harness.task_settings()["lr"] == FULL.lr


def test_seeded_options_give_the_seeds_from_first_seed(harness, monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("ICRM_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    parser = harness.seeded_parser("Title line.\n\nMore.", seeds=5)
    assert parser.description == "Title line."
    assert parser.parse_args([]).seeds == 5
    try:
        assert harness.start(parser.parse_args(["--seeds", "2", "--first-seed", "3", "--threads", "1"])) == [3, 4]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- the shared runner


def test_run_row_without_a_backbone_starts_from_the_sft_model(tmp_path, reproduction):
    """attribution.py, locality.py and dpo_loop.py pass no backbone: the reward model starts from the generator."""
    from icrm.commands.data import write_task
    from icrm.modeling import build_causal_lm, train_tokenizer

    data, sft = tmp_path / "data", tmp_path / "sft"
    write_task("noisy", data, seed=0, n_train=16, n_test=8, flip=0.25)
    tokenizer = train_tokenizer((data / "train.jsonl").read_text().splitlines(), 300)
    build_causal_lm("tiny", tokenizer, seed=0).save_pretrained(sft)
    tokenizer.save_pretrained(sft)
    accuracy = reproduction.run_row(reproduction.ROWS[0], data, sft, tmp_path, 0, ["test"])
    assert set(accuracy) == {"test"} and 0.0 <= accuracy["test"] <= 1.0
    assert (tmp_path / "rm" / "model.safetensors").exists()


def test_real_quality_trains_the_sft_generator_only_for_icrm_rows_that_use_it(benchmarks, tmp_path):
    from benchmarks.real_quality import ROWS

    rows = {r.name: r for r in ROWS}
    needs = {name for name, r in rows.items() if r.needs_sft_generator}
    assert needs == {"ICRM λ=0.1", "ICRM λ=0.5", "ICRM λ=0.9"}  # not BT, GRM, the lr controls or the base generator
    assert rows["ICRM λ=0.9"].generator_path(tmp_path) == str(tmp_path / "generator")
    assert rows["ICRM λ=0.9 base generator"].generator_path(tmp_path) == "smollm2-135m"


def test_bf16_rows_and_trainers_train_in_bf16_and_only_they_do(benchmarks, tmp_path):
    from benchmarks.real_quality import ROWS, training_options
    from benchmarks.train_throughput import run_spec

    assert [r.name for r in ROWS if r.bf16] == ["BT bf16"]
    assert training_options(0, 1e-4, 1.0, bf16=True)["bf16"] and not training_options(0, 1e-4, 1.0)["bf16"]
    base = {"generator": "g", "bf16": False}
    runs = {m: run_spec(base, tmp_path, "hh", m)["bf16"] for m in ("trl", "trl-bf16", "bt-packed", "bt-packed-bf16")}
    assert runs == {"trl": False, "trl-bf16": True, "bt-packed": False, "bt-packed-bf16": True}


def test_real_quality_table_pairs_rows_with_bt_by_seed(benchmarks):
    from benchmarks.real_quality import ROWS, table

    scores = {"heldout": 0.5, "reversed": 0.5, "verbosity": 0.5, "llmbar": 0.5}
    results = {"0": {"BT": scores, "ICRM λ=0.9": {**scores, "llmbar": 0.6}},
               "1": {"BT": scores, "ICRM λ=0.9": {**scores, "llmbar": 0.55}},
               "2": {"BT": scores}}  # a seed without the row is left out of its pairs
    text = table(results, ROWS)
    assert "| BT | 50.0 ± 0.0 | 50.0 ± 0.0 | 50.0 ± 0.0 | 50.0 ± 0.0 |" in text
    difference = next(line for line in text.splitlines() if line.startswith("| ICRM λ=0.9 |") and "[" in line)
    assert difference.endswith("| +7.5 [-24.3, +39.3] 2/2 |")  # +10 and +5: mean 7.5, 12.706 × 3.54 / √2
    assert "GRM" not in text


# ---------------------------------------------------------------- import rules


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every absolute import in ``path``, inside functions too.

    A name read from an imported icrm module (``training._x`` after ``from icrm import training``)
    counts as imported from it.
    """
    found, modules = [], {}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
            if node.module == "icrm":
                modules.update({alias.asname or alias.name: f"icrm.{alias.name}" for alias in node.names})
        elif isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
            modules.update({alias.asname: alias.name for alias in node.names if alias.asname})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            found.append((modules[node.value.id], [node.attr], node.lineno))
    return found


def test_benchmarks_use_public_icrm_names_only():
    private = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        for module, names, line in _imports(path):
            if module.split(".")[0] != "icrm":
                continue
            hidden = [part for part in module.split(".")[1:] if part.startswith("_")]
            hidden += [name for name in names if name.startswith("_")]
            if hidden:
                private.append(f"{path.name}:{line} imports {', '.join(hidden)} from {module}")
        assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path: import benchmarks.<module> instead"
    assert not private, "\n".join(private)


def test_icrm_never_imports_benchmarks():
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "src" / "icrm").rglob("*.py"))
        for module, _, line in _imports(path)
        if module.split(".")[0] == "benchmarks"
    ]
    assert not found, found


def test_the_import_check_sees_private_and_benchmarks_imports(tmp_path):
    """The two checks above read what they should: a private import and a benchmarks import are found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from icrm.commands.demo import _hidden\n    import benchmarks.harness\n"
                     "    from icrm import training\n    training._stats = None\n")
    assert ("icrm.commands.demo", ["_hidden"], 2) in _imports(probe)
    assert ("benchmarks.harness", [], 3) in _imports(probe)
    assert ("icrm.training", ["_stats"], 5) in _imports(probe)
