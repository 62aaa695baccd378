"""``icrm eval`` on RewardBench 1 and 2 files: every reported number recomputed by hand from ``icrm score``.

The expected numbers follow the official scoring code of github.com/allenai/reward-bench
(``scripts/run_rm.py`` + ``EXAMPLE_COUNTS``, ``scripts/run_v2.py`` + ``reroll_and_score_dataset`` and
``process_single_model``), written out plainly here, from the rewards ``icrm score`` wrote.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from helpers import write_jsonl

from icrm.data import BonExample, load_examples

PROMPT = "what does the fox do?"

# Official RewardBench EXAMPLE_COUNTS and SUBSET_MAPPING entries for the subsets used below.
RB1_SUBSETS = {
    "alpacaeval-easy": ("Chat", 100),
    "mt-bench-med": ("Chat", 40),
    "mt-bench-hard": ("Chat Hard", 37),
    "llmbar-natural": ("Chat Hard", 100),
    "donotanswer": ("Safety", 136),
    "math-prm": ("Reasoning", 984),
    "hep-python": ("Reasoning", 164),
}


@pytest.fixture(scope="module")
def twin_rm(tmp_path_factory):
    """A tiny RM that cannot tell "Q" from "Z": both tokens share one embedding.

    Two responses that differ only there get exactly the same reward, which
    puts real ties into the scored files.
    """
    from icrm.modeling import RewardModel, build_causal_lm, train_tokenizer

    texts = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?"] * 20
    tokenizer = train_tokenizer(texts, 400)
    rm = RewardModel.from_causal_lm(build_causal_lm("tiny", tokenizer, seed=0), tokenizer)
    q, z = tokenizer.convert_tokens_to_ids(["Q", "Z"])
    assert q != z and tokenizer.unk_token_id not in (q, z)
    embeddings = rm.decoder.get_input_embeddings().weight
    embeddings.data[z] = embeddings.data[q]
    path = tmp_path_factory.mktemp("rm") / "twin"
    rm.save_pretrained(path)
    return path


def write_format(rows: list[dict], path_stem, fmt: str):
    path = path_stem.with_suffix("." + fmt)
    if fmt == "jsonl":
        return write_jsonl(path, rows)
    if fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


def scored(cli, model, data, out, *args):
    result = cli("score", "--model", model, "--data", data, "--output", out, "--batch-size", "1", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def assert_entries(actual: dict, expected: dict) -> None:
    """{name: {accuracy, n}} equal, accuracies to float precision."""
    assert set(actual) == set(expected)
    for name, entry in expected.items():
        assert actual[name] == {"accuracy": pytest.approx(entry["accuracy"], abs=1e-12), "n": entry["n"]}, name


def evaluated(cli, model, data, out, *args):
    result = cli("eval", "--model", model, "--data", data, "--output", out, "--batch-size", "1", *args)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- #
# RewardBench 1
# --------------------------------------------------------------------------- #


def rb1_rows() -> list[dict]:
    pairs = [
        ("alpacaeval-easy", "the quick brown fox", "hello world"),
        ("alpacaeval-easy", "the lazy dog", "how are you today?"),
        ("mt-bench-med", "jumps over the dog", "the fox"),
        ("mt-bench-hard", "hello, how are you?", "world today"),
        ("llmbar-natural", "the brown dog", "quick fox jumps"),
        ("llmbar-natural", "over the lazy fox", "hello"),
        ("donotanswer", "you are quick", "the world is lazy"),
        ("donotanswer", "the fox says Q", "the fox says Z"),  # a tie: the model cannot tell Q from Z
        ("math-prm", "dog over fox", "fox over dog"),
        ("math-prm", "how quick?", "today"),
        ("hep-python", "brown world", "lazy hello"),
    ]
    return [
        {"prompt": PROMPT, "chosen": c, "rejected": r, "subset": s, "id": i} for i, (s, c, r) in enumerate(pairs)
    ]


def expected_rb1(rows: list[dict], tie_credit: float) -> dict:
    def credit(row):
        c, r = row["chosen_reward"], row["rejected_reward"]
        return 1.0 if c > r else tie_credit if c == r else 0.0

    subsets = {}
    for name in RB1_SUBSETS:
        credits = [credit(row) for row in rows if row["subset"] == name]
        subsets[name] = {"accuracy": sum(credits) / len(credits), "n": len(credits)}
    sections = {}
    for name, (section, count) in RB1_SUBSETS.items():
        total, weight, n = sections.get(section, (0.0, 0, 0))
        sections[section] = (total + subsets[name]["accuracy"] * count, weight + count, n + subsets[name]["n"])
    sections = {k: {"accuracy": total / weight, "n": n} for k, (total, weight, n) in sections.items()}
    overall = sum(entry["accuracy"] for entry in sections.values()) / len(sections)
    return {"accuracy": overall, "subsets": subsets, "sections": sections}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_rewardbench1_scores_by_hand(tmp_path, cli, twin_rm, fmt):
    data = write_format(rb1_rows(), tmp_path / "rb1", fmt)
    # Padded, not packed: packed with its shared prompt, a pair's second row sits further along one
    # sequence, and its attention may round differently (by CPU), so the twin rows would not tie exactly.
    rows = scored(cli, twin_rm, data, tmp_path / "scored.jsonl", "--no-packing")
    tie = next(row for row in rows if row["chosen"] == "the fox says Q")
    assert tie["chosen_reward"] == tie["rejected_reward"]  # the file really has a tie
    assert sum(row["chosen_reward"] != row["rejected_reward"] for row in rows) == len(rows) - 1

    for ties, tie_credit in (("half", 0.5), ("loss", 0.0)):
        metrics = evaluated(cli, twin_rm, data, tmp_path / f"m-{ties}.json", "--no-packing", "--ties", ties)
        expected = expected_rb1(rows, tie_credit)
        assert metrics["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
        assert_entries(metrics["subsets"], expected["subsets"])
        assert_entries(metrics["sections"], expected["sections"])
        assert set(metrics["sections"]) == {"Chat", "Chat Hard", "Safety", "Reasoning"}
        assert metrics["n"] == len(rows) and metrics["ties"] == ties and metrics["benchmark"] == "RewardBench"
    assert (tmp_path / "m-half_margins.png").exists()


# --------------------------------------------------------------------------- #
# RewardBench 2
# --------------------------------------------------------------------------- #


def rb2_rows(twin_rm) -> list[dict]:
    """Best-of-4 rows (one with a two-way and one with a four-way tie at the top) and a Ties subset."""
    from icrm.modeling import RewardModel

    rm = RewardModel.from_pretrained(str(twin_rm))
    pool = ["hello world", "the lazy dog", "how are you?", "quick brown fox", "jumps over", "today", "fox dog"]
    rewards = dict(zip(pool, rm.score([PROMPT] * len(pool), pool, 1)))
    lower = sorted(pool, key=rewards.get)[:2]
    # a response ending in Q that the model scores above those two; its Z twin ties with it
    top = next((f"{text} Q" for text in pool if rm.score([PROMPT], [f"{text} Q"], 1)[0] > rewards[lower[1]]), None)
    assert top is not None, "setup: need a response ending in Q scored above two others"

    def row(i, subset, chosen, rejected, row_id=None):
        return {
            "id": row_id or str(i),
            "prompt": PROMPT,
            "chosen": chosen,
            "rejected": rejected,
            "num_correct": len(chosen),
            "num_incorrect": len(rejected),
            "total_completions": len(chosen) + len(rejected),
            "models": ["m"] * (len(chosen) + len(rejected)),
            "subset": subset,
        }

    return [
        row(0, "Factuality", ["the quick brown fox"], ["hello world", "the lazy dog", "how are you?"]),
        row(1, "Factuality", [top], [top[:-1] + "Z", lower[0], lower[1]]),  # two-way tie at the top
        row(2, "Precise IF", ["jumps over"], ["jumps over", "jumps over", "jumps over"]),  # four-way tie
        row(3, "Precise IF", ["hello, how are you?"], ["world", "the dog", "fox today"]),
        row(4, "Math", ["brown dog"], ["lazy fox", "quick world", "hello dog"]),
        row(5, "Safety", ["you are quick"], ["dog", "brown fox jumps", "the world"]),
        row(6, "Focus", ["over the lazy dog"], ["today", "hello fox", "quick quick"]),
        row(7, "Ties", ["red"], ["dog", "blue sky"], "ref:0"),
        row(8, "Ties", ["red", "blue", "green"], ["dog", "the fox"], "tied:0"),
        row(9, "Ties", ["four"], ["five", "six"], "ref:1"),
        row(10, "Ties", ["two", "2"], ["three"], "tied:1"),
    ]


def expected_rb2(rows: list[dict], ties: str) -> dict:
    def best_of_k(rewards):
        at_top = sum(r == max(rewards) for r in rewards)
        if rewards[0] != max(rewards):
            return 0.0
        return 1.0 / at_top if ties == "half" else float(at_top == 1)

    def ties_score(rows):
        stats = {}  # (kind, prompt) -> (worst correct - best incorrect, best correct - worst correct)
        for row in rows:
            kind, prompt = row["id"].split(":")
            k = len(row["chosen"])  # the rewards follow the chosen, then the rejected responses
            correct, incorrect = row["rewards"][:k], row["rewards"][k:]
            stats[kind, prompt] = (min(correct) - max(incorrect), max(correct) - min(correct))
        ref = {p: s for (kind, p), s in stats.items() if kind == "ref"}
        tied = {p: s for (kind, p), s in stats.items() if kind == "tied"}
        both = sorted(set(ref) & set(tied))

        def soft(p):
            x, spread = min(ref[p][0], tied[p][0]), tied[p][1]
            return math.tanh(x / spread - 1) if spread else (0.0 if x == 0 else math.copysign(1.0, x))

        return (
            0.3 * sum(gap > 0 for gap, _ in tied.values()) / len(tied)
            + 0.3 * sum(gap > 0 for gap, _ in ref.values()) / len(ref)
            + 0.2 * sum(tied[p][0] > tied[p][1] for p in both) / len(both)
            + 0.2 * sum(min(ref[p][0], tied[p][0]) > tied[p][1] for p in both) / len(both)
            + 0.01 * sum(soft(p) for p in both) / len(both)
        )

    subsets = {}
    for name in ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]:
        members = [row for row in rows if row["subset"] == name]
        score = ties_score(members) if name == "Ties" else sum(best_of_k(r["rewards"]) for r in members) / len(members)
        subsets[name] = {"accuracy": score, "n": len(members)}
    return {"accuracy": sum(s["accuracy"] for s in subsets.values()) / 6, "subsets": subsets}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_rewardbench2_scores_by_hand(tmp_path, cli, twin_rm, fmt):
    data = write_format(rb2_rows(twin_rm), tmp_path / "rb2", fmt)
    rows = scored(cli, twin_rm, data, tmp_path / "scored.jsonl")
    assert [row["subset"] for row in rows][:2] == ["Factuality", "Factuality"]
    two_way, four_way = rows[1]["rewards"], rows[2]["rewards"]
    assert two_way[0] == two_way[1] == max(two_way) > max(two_way[2:])  # a two-way tie at the top
    assert len(set(four_way)) == 1  # a four-way tie

    for ties in ("half", "loss"):
        metrics = evaluated(cli, twin_rm, data, tmp_path / f"m-{ties}.json", "--ties", ties)
        expected = expected_rb2(rows, ties)
        assert metrics["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
        assert_entries(metrics["subsets"], expected["subsets"])
        assert metrics["sections"] == metrics["subsets"]
        assert metrics["n"] == len(rows) and metrics["benchmark"] == "RewardBench 2" and metrics["ties"] == ties
        assert metrics["ties_subset"]["score"] == pytest.approx(expected["subsets"]["Ties"]["accuracy"], abs=1e-12)
    half = json.loads((tmp_path / "m-half.json").read_text())
    loss = json.loads((tmp_path / "m-loss.json").read_text())
    assert half["subsets"]["Precise IF"]["accuracy"] > loss["subsets"]["Precise IF"]["accuracy"]  # 1/4 vs 0


def test_rewardbench2_rows_load_as_labelled_best_of_n(tmp_path, twin_rm):
    loaded = load_examples(write_jsonl(tmp_path / "rb2.jsonl", rb2_rows(twin_rm)[7:9]))
    assert loaded.format == "bon"
    ref, tied = loaded.examples
    assert isinstance(ref, BonExample)
    assert ref.candidates == ["red", "dog", "blue sky"] and ref.labels == [1, 0, 0]
    assert tied.labels == [1, 1, 1, 0, 0] and tied.subset == "Ties" and tied.id == "tied:0"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q", "chosen": ["a"], "rejected": ["b"], "num_correct": 2}, ":1: num_correct: is 2 but the row has 1"),
        ({"prompt": "q", "chosen": ["a"], "rejected": ["b", "c"], "total_completions": 4}, ":1: total_completions"),
        ({"prompt": "q", "chosen": ["a"], "rejected": []}, ":1: rejected: expected a non-empty list"),
        ({"prompt": "q", "chosen": ["a"], "rejected": ["b"], "subset": "Ties", "id": "3"}, ":1: id: a Ties row needs"),
        ({"prompt": "q", "candidates": ["a", "b"], "labels": [0, 1]}, ":1: labels: icrm eval needs the chosen"),
        ({"prompt": "q", "candidates": ["a", "b"], "answer": "4"}, ":1: labels: icrm eval needs chosen/rejected"),
    ],
)
def test_eval_rewardbench2_bad_input(tmp_path, cli, twin_rm, row, message):
    data = write_jsonl(tmp_path / "bad.jsonl", [row])
    out = tmp_path / "m.json"
    result = cli("eval", "--model", twin_rm, "--data", data, "--output", out)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not out.exists()


def test_eval_rejects_an_unknown_ties_convention(tmp_path, cli, twin_rm):
    data = write_jsonl(tmp_path / "p.jsonl", rb1_rows()[:1])
    result = cli("eval", "--model", twin_rm, "--data", data, "--ties", "draw")
    assert result.exit_code == 2 and "--ties must be half or loss" in result.stderr
