"""Embedded tasks: the truth they are built on, their splits, determinism and atomic writing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from icrm.commands import data as data_command
from icrm.commands.data import write_task
from icrm.data import (
    BAD_WORDS,
    GOOD_WORDS,
    SUFFIX,
    TASKS,
    arithmetic_is_correct,
    decisive_word_mask,
    synthetic,
    true_reward,
)
from icrm.errors import UserError
from icrm.outputs import OUTPUT_MARKER

SUFFIX_TEXT = " ".join(SUFFIX)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def recount(response: str) -> int:
    words = response.split()
    return sum(w in GOOD_WORDS for w in words) - sum(w in BAD_WORDS for w in words)


def n_words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Every task written once with small sizes (noisy keeps its default 300 training pairs)."""
    root = tmp_path_factory.mktemp("synth")
    sizes = {
        "noisy": {},
        "length": {"n_train": 200, "n_test": 200},
        "suffix": {"n_train": 200, "n_test": 200},
        "arithmetic": {"n_train": 200, "n_test": 100, "flip": 0.1},
        "addition": {"n_train": 200, "n_test": 100, "flip": 0.1},
    }
    return {task: (root / task, write_task(task, root / task, seed=3, **kw)) for task, kw in sizes.items()}


def test_vocabularies_are_disjoint():
    groups = [set(synthetic.FILLER_WORDS), set(GOOD_WORDS), set(BAD_WORDS), set(SUFFIX)]
    assert sum(map(len, groups)) == len(set().union(*groups))
    assert len(set(synthetic.FILLER_WORDS)) == len(synthetic.FILLER_WORDS)  # next word follows from the previous


def test_true_reward_counts_decisive_words():
    assert true_reward("noisy", "well excellent here is wrong my clear view") == 1.0
    assert true_reward("suffix", "Excellent, clear. hope this helps") == 2.0  # punctuation and case of sampled text
    assert true_reward("length", "well here is") == 0.0
    with pytest.raises(ValueError, match="arithmetic_is_correct"):
        true_reward("arithmetic", "Step 1: 1 + 1 = 2. Answer: 2")
    with pytest.raises(ValueError, match="unknown task"):
        true_reward("nope", "x")


def test_decisive_word_mask_marks_good_and_bad_words():
    assert decisive_word_mask("well excellent here rude. view") == [False, True, False, True, False]


def test_noisy_files_and_task_json(written):
    out, info = written["noisy"]
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "prompts.jsonl", "task.json", "test.jsonl", "train.jsonl"]
    assert json.loads((out / "task.json").read_text()) == info
    assert (info["task"], info["seed"], info["n_train"], info["n_test"], info["flip"]) == ("noisy", 3, 300, 500, 0.25)
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert len(train) == 300 and len(test) == 500
    assert read_jsonl(out / "prompts.jsonl") == [{"prompt": r["prompt"]} for r in test]
    for row in train + test:
        assert set(row) == {"id", "prompt", "chosen", "rejected", "subset"}
        assert row["chosen"] != row["rejected"]
        for response in (row["chosen"], row["rejected"]):
            assert synthetic.MIN_WORDS <= n_words(response) <= synthetic.MAX_WORDS
            assert true_reward("noisy", response) == recount(response)
            assert sum(decisive_word_mask(response)) <= 2 * synthetic.MAX_DECISIVE
    assert {r["subset"] for r in train} == {"noisy-train"} and {r["subset"] for r in test} == {"noisy-test"}
    assert len({r["prompt"] for r in train}) > 50  # varied prompts


def test_noisy_flips_exactly_the_stated_share(written):
    out, info = written["noisy"]
    train = read_jsonl(out / "train.jsonl")
    assert info["n_flipped"] == round(0.25 * 300) == len(info["flipped_ids"])
    wrong = {r["id"] for r in train if recount(r["chosen"]) < recount(r["rejected"])}
    assert wrong == set(info["flipped_ids"])
    assert all(recount(r["chosen"]) != recount(r["rejected"]) for r in train)


def test_noisy_test_pairs_are_clean(written):
    out, _ = written["noisy"]
    assert all(recount(r["chosen"]) > recount(r["rejected"]) for r in read_jsonl(out / "test.jsonl"))


def test_prompt_does_not_decide_the_label(written):
    out, _ = written["noisy"]
    test = read_jsonl(out / "test.jsonl")
    # The same prompt comes with pairs of many different reward gaps.
    by_prompt: dict[str, set[int]] = {}
    for r in test:
        by_prompt.setdefault(r["prompt"], set()).add(recount(r["chosen"]) - recount(r["rejected"]))
    assert max(len(gaps) for gaps in by_prompt.values()) > 1


@pytest.mark.parametrize("task", ["length", "suffix"])
def test_probe_files_and_clean_labels(written, task):
    out, info = written[task]
    names = [OUTPUT_MARKER, "task.json", "test_mixed.jsonl", "test_reversed.jsonl", "train.jsonl"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert info["n_flipped"] == 0 and info["files"] == {n: 200 for n in names if n.endswith(".jsonl")}
    for split in ("train", "mixed", "reversed"):
        rows = read_jsonl(out / ("train.jsonl" if split == "train" else f"test_{split}.jsonl"))
        assert {r["subset"] for r in rows} == {f"{task}-{split}"}
        assert all(recount(r["chosen"]) > recount(r["rejected"]) for r in rows)  # the confound is additive


def probe_rows(written, task: str, split: str) -> list[dict]:
    out, _ = written[task]
    return read_jsonl(out / ("train.jsonl" if split == "train" else f"test_{split}.jsonl"))


def test_length_probe_relation(written):
    def chosen_longer(split):
        return [n_words(r["chosen"]) > n_words(r["rejected"]) for r in probe_rows(written, "length", split)]

    assert all(chosen_longer("train"))
    assert not any(chosen_longer("reversed"))
    assert 0.35 < sum(chosen_longer("mixed")) / 200 < 0.65
    gaps = [abs(n_words(r["chosen"]) - n_words(r["rejected"])) for r in probe_rows(written, "length", "mixed")]
    assert min(gaps) >= synthetic.LENGTH_GAP[0]


def test_suffix_probe_relation(written):
    def suffixes(split):
        rows = probe_rows(written, "suffix", split)
        return [(r["chosen"].endswith(SUFFIX_TEXT), r["rejected"].endswith(SUFFIX_TEXT)) for r in rows]

    assert set(suffixes("train")) == {(True, False)}
    assert set(suffixes("reversed")) == {(False, True)}
    mixed = suffixes("mixed")
    assert set(mixed) == {(True, False), (False, True)}
    assert 0.35 < mixed.count((True, False)) / 200 < 0.65
    # Lengths do not follow the suffix: it replaces filler words.
    train = probe_rows(written, "suffix", "train")
    assert 0.3 < sum(n_words(r["chosen"]) > n_words(r["rejected"]) for r in train) / 200 < 0.7


def test_probe_flip_keeps_the_feature_on_the_labelled_side(tmp_path):
    info = write_task("length", tmp_path / "d", n_train=100, n_test=10, flip=0.2)
    train = read_jsonl(tmp_path / "d" / "train.jsonl")
    assert all(n_words(r["chosen"]) > n_words(r["rejected"]) for r in train)
    assert {r["id"] for r in train if recount(r["chosen"]) < recount(r["rejected"])} == set(info["flipped_ids"])
    assert info["n_flipped"] == 20


def parse_steps(response: str) -> list[tuple[int, str, int, int]]:
    return [(int(a), op, int(b), int(c)) for _, a, op, b, c in synthetic.STEP_RE.findall(response)]


def true_value(prompt: str) -> int:
    expression = re.fullmatch(r"Compute (.+)\.", prompt).group(1)
    return eval(expression)  # our own digits and + - * only


def step_is_right(a: int, op: str, b: int, c: int) -> bool:
    return synthetic.OPERATORS[op](a, b) == c


@pytest.mark.parametrize("task", ["arithmetic", "addition"])
def test_step_task_pointwise_labels_match_the_checker(written, task):
    out, info = written[task]
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "bon.jsonl", "task.json", "test.jsonl", "train.jsonl"]
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert info["n_flipped"] == 20
    flipped = {r["id"] for r in train if r["label"] != arithmetic_is_correct(r["prompt"], r["response"])}
    assert flipped == set(info["flipped_ids"])
    assert all(r["label"] == arithmetic_is_correct(r["prompt"], r["response"]) for r in test)
    assert 0.35 < sum(r["label"] for r in test) / len(test) < 0.65
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}  # held-out expressions


def test_arithmetic_wrong_steps_propagate(written):
    out, _ = written["arithmetic"]
    for row in read_jsonl(out / "test.jsonl"):
        steps = parse_steps(row["response"])
        answer = int(row["response"].rsplit("Answer: ", 1)[1])
        assert answer == steps[-1][3]
        assert all(abs(n) < 100 for step in steps for n in (step[0], step[2], step[3]))  # small numbers
        wrong = [k for k, step in enumerate(steps) if not step_is_right(*step)]
        if row["label"]:
            assert wrong == [] and answer == true_value(row["prompt"])
        else:
            assert len(wrong) == 1 and answer != true_value(row["prompt"])  # later steps are computed from the slip


def test_arithmetic_checker():
    prompt = "Compute 3 + 4 * 2 - 5."
    right = "Step 1: 4 * 2 = 8. Step 2: 3 + 8 = 11. Step 3: 11 - 5 = 6. Answer: 6"
    assert arithmetic_is_correct(prompt, right)
    assert arithmetic_is_correct(prompt, right + "\n")
    assert not arithmetic_is_correct(prompt, right.replace("Answer: 6", "Answer: 7"))
    assert not arithmetic_is_correct(prompt, "Step 1: 4 * 2 = 9. Step 2: 3 + 9 = 12. Step 3: 12 - 5 = 7. Answer: 7")
    # A right answer reached through a wrong step is still wrong.
    assert not arithmetic_is_correct(prompt, "Step 1: 3 + 4 = 7. Step 2: 7 * 2 = 14. Step 3: 14 - 8 = 6. Answer: 6")
    assert not arithmetic_is_correct(prompt, "Answer: 6")
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        arithmetic_is_correct("Describe the weather in Paris.", right)


def test_addition_wrong_solutions_drop_carries(written):
    out, _ = written["addition"]
    rows = read_jsonl(out / "test.jsonl")
    for row in rows:
        steps = parse_steps(row["response"])
        answer = int(row["response"].rsplit("Answer: ", 1)[1])
        assert {op for _, op, _, _ in steps} == {"+"} and 4 <= len(steps) + 1 <= 5
        assert all(steps[k][3] == steps[k + 1][0] for k in range(len(steps) - 1))  # each step continues the last
        dropped = [k for k, (a, _, b, c) in enumerate(steps) if c != a + b]
        assert all(a + b - c == 10 and c < a for a, _, b, c in (steps[k] for k in dropped))
        assert (dropped == []) == bool(row["label"])
        assert true_value(row["prompt"]) - answer == 10 * len(dropped)
    assert 0.35 < sum(r["label"] for r in rows) / len(rows) < 0.65


@pytest.mark.parametrize("task", ["arithmetic", "addition"])
def test_step_task_best_of_n(written, task):
    out, info = written[task]
    rows = read_jsonl(out / "bon.jsonl")
    assert len(rows) == 100 and info["n_candidates"] == 8
    mixed = 0
    for row in rows:
        assert set(row) == {"id", "prompt", "candidates", "labels", "answer"}
        assert len(row["labels"]) == len(row["candidates"]) == 8
        assert row["labels"] == [int(arithmetic_is_correct(row["prompt"], c)) for c in row["candidates"]]
        assert row["answer"] == str(true_value(row["prompt"]))
        mixed += 0 < sum(row["labels"]) < 8
    assert mixed >= 0.85 * len(rows)
    train_prompts = {r["prompt"] for r in read_jsonl(out / "train.jsonl")}
    assert not train_prompts & {r["prompt"] for r in rows}


@pytest.mark.parametrize("task", list(TASKS))
def test_seed_reproduces_bytes_and_other_seeds_differ(tmp_path, task):
    def files(seed, name):
        write_task(task, tmp_path / name, seed=seed, n_train=40, n_test=20)
        return {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}

    first, again, other = files(7, "a"), files(7, "b"), files(8, "c")
    assert first == again
    assert all(first[name] != other[name] for name in first if name != OUTPUT_MARKER)


def test_splits_do_not_depend_on_other_sizes(tmp_path):
    write_task("noisy", tmp_path / "a", n_train=40, n_test=20)
    write_task("noisy", tmp_path / "b", n_train=60, n_test=20)
    assert (tmp_path / "a" / "test.jsonl").read_bytes() == (tmp_path / "b" / "test.jsonl").read_bytes()


def test_generators_return_rows_in_memory():
    data = TASKS["noisy"](seed=1, n_train=10, n_test=5)
    assert data.info["files"] == {"train.jsonl": 10, "test.jsonl": 5, "prompts.jsonl": 5}
    assert data.info["n_flipped"] == round(0.25 * 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"task": "noisy", "n_train": 0}, "n_train must be a positive integer"),
        ({"task": "noisy", "n_test": -3}, "n_test must be a positive integer"),
        ({"task": "length", "n_train": 2.5}, "n_train must be a positive integer"),
        ({"task": "arithmetic", "flip": 1.5}, "flip must be a share between 0 and 1"),
    ],
)
def test_bad_options_raise_before_writing(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):  # a ValueError the CLI reports with exit code 2
        write_task(output=tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, rows):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        path.write_text("partial\n")

    monkeypatch.setattr(data_command, "write_jsonl", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_task("noisy", tmp_path / "out", n_train=10, n_test=5)
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_an_earlier_output_only_when_complete(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_task("noisy", out, seed=1, n_train=10, n_test=5)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing_write(path, rows):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(data_command, "write_jsonl", failing_write)
        with pytest.raises(OSError):
            write_task("noisy", out, seed=2, n_train=10, n_test=5)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    info = write_task("arithmetic", out, seed=2, n_train=10, n_test=5)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "bon.jsonl", "task.json", "test.jsonl", "train.jsonl"]
    assert info["task"] == "arithmetic" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="mine exists and is not an icrm data synth output"):
        write_task("noisy", out, n_train=10, n_test=5)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


# --- steps (process supervision) ----------------------------------------------------


@pytest.fixture(scope="module")
def steps_task(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("steps") / "steps"
    return out, write_task("steps", out, seed=2, n_train=200, n_test=100, flip=0.05)


def test_step_labels_checker():
    prompt = "It is Friday. Count forward 2 days, then 1, then 2. What day is it?"
    right = ["2 days after Friday is Sunday", "1 day after Sunday is Monday", "2 days after Monday is Wednesday"]
    assert synthetic.step_labels(prompt, right) == [1, 1, 1]
    slip = ["2 days after Friday is Saturday", "1 day after Saturday is Sunday", "2 days after Sunday is Tuesday"]
    assert synthetic.step_labels(prompt, slip) == [0, 0, 0]  # later lines count on right from the slip: still wrong
    late = right[:2] + ["2 days after Monday is Thursday"]
    assert synthetic.step_labels(prompt, late) == [1, 1, 0]
    # a second slip that lands on the right day again does not make the prefix right
    back = ["2 days after Friday is Saturday", "1 day after Sunday is Monday", right[2]]
    assert synthetic.step_labels(prompt, back) == [0, 0, 0]
    assert synthetic.step_labels(prompt, right + ["1 day after Wednesday is Thursday"]) == [1, 1, 1, 0]
    with pytest.raises(UserError, match="not a day-counting prompt"):
        synthetic.step_labels("Compute 1 + 2.", right)


def test_steps_files_labels_and_held_out_prompts(steps_task):
    out, info = steps_task
    names = [OUTPUT_MARKER, "bon.jsonl", "task.json", "test.jsonl", "test_processbench.jsonl", "train.jsonl"]
    assert sorted(p.name for p in out.iterdir()) == names
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert info["n_flipped"] == round(0.05 * sum(len(r["labels"]) for r in train))
    flipped = {f"{r['id']}/{k}" for r in train
               for k, (y, truth) in enumerate(zip(r["labels"], synthetic.step_labels(r["prompt"], r["completions"])))
               if y != bool(truth)}
    assert flipped == set(info["flipped_ids"])
    for row in test:
        assert set(row) == {"id", "prompt", "completions", "labels"}
        assert row["labels"] == [bool(y) for y in synthetic.step_labels(row["prompt"], row["completions"])]
        assert 3 <= len(row["completions"]) <= 6
    assert 0.35 < sum(r["labels"][-1] for r in test) / len(test) < 0.65
    firsts = [next((k for k, y in enumerate(r["labels"]) if not y), -1) for r in test]
    assert len({f for f in firsts if f >= 0}) >= 4  # first slips at many positions
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    processbench = read_jsonl(out / "test_processbench.jsonl")
    assert [(r["problem"], r["steps"], r["label"]) for r in processbench] == [
        (r["prompt"], r["completions"], f) for r, f in zip(test, firsts)
    ]


def test_steps_best_of_n(steps_task):
    out, _ = steps_task
    rows = read_jsonl(out / "bon.jsonl")
    assert len(rows) == 100
    train_prompts = {r["prompt"] for r in read_jsonl(out / "train.jsonl")}
    for row in rows:
        steps = [c.split("\n") for c in row["candidates"]]
        assert row["labels"] == [synthetic.step_labels(row["prompt"], s)[-1] for s in steps]
        assert row["prompt"] not in train_prompts
    assert sum(0 < sum(r["labels"]) < 8 for r in rows) >= 0.8 * len(rows)
