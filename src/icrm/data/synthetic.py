"""Embedded tasks whose right answer is known (docs/design.md#embedded-tasks).

Each task is rows in icrm's formats (docs/design.md#data-formats), which ``icrm data
synth`` (:func:`icrm.commands.data.write_task`) writes as ordinary JSONL files, so the
demo and tests can train reward models on them with the same commands a user
runs on real data, and judge rankings, best-of-N picks and DPO policies by
the truth instead of by another model:

* ``noisy`` -- the main generalization test. Responses are filler from a
  near-deterministic word process (high generator probability) plus a few
  decisive, low-probability GOOD/BAD words; the true reward is
  ``#good - #bad``. Few training pairs, a share of their labels flipped;
  clean held-out test pairs.
* ``length`` / ``suffix`` -- spurious-feature probes on the same responses.
  In training the chosen response is also longer (``length``) or ends with a
  fixed phrase (``suffix``); the ``mixed`` test split makes the feature
  independent of the label and ``reversed`` puts it on the rejected side.
* ``arithmetic`` -- step-by-step calculations in which one wrong step makes
  the answer wrong; pointwise correctness labels and best-of-N candidates.
  Checking a step means redoing it (a joint function of three numbers, with
  no single token that gives the error away): the tiny preset does not learn
  it from a thousand examples (its verifiers fall below chance; BENCHMARKS.md).
* ``addition`` -- the same format for sums of one-digit numbers, where a
  wrong solution drops a carry (the step's result is 10 too small, so it is
  smaller than what it adds to); a check the tiny preset does learn, and the
  demo's best-of-N task.
* ``steps`` -- process supervision: counting days of the week forward, one
  line per step, with a true label per step (TRL's stepwise format) and
  best-of-N candidates split into steps.

Bad options raise :class:`icrm.errors.UserError` (a ``ValueError``), which
the CLI reports as one line with exit code 2.

Everything is a pure function of the seed (each split draws from its own
``random.Random``, so changing one size leaves the other splits alone), and
only the standard library is used, so the data can be made anywhere.

The tasks stay in one module, past the usual length, because they are one
design: they share the seeding scheme, the held-out rule, the size checks and
the task.json record, and reading them together shows that each is built the
same way.
"""

from __future__ import annotations

import itertools
import operator
import random
import re
import zlib
from dataclasses import dataclass
from typing import Callable

from ..errors import UserError

__all__ = [
    "BAD_WORDS",
    "GOOD_WORDS",
    "SUFFIX",
    "TASKS",
    "SyntheticData",
    "arithmetic_is_correct",
    "decisive_word_mask",
    "generate_addition",
    "generate_arithmetic",
    "generate_length",
    "generate_noisy",
    "generate_steps",
    "generate_suffix",
    "step_labels",
    "true_reward",
]

# --- vocabulary -----------------------------------------------------------

# The filler process walks this sentence word by word: every word is unique,
# so the previous word predicts the next one and a generator trained on the
# responses gives filler a high probability.
FILLER_WORDS = tuple(
    "well here is my view on that topic so let me explain why it matters to "
    "most people in daily life because details often change over time".split()
)
# Decisive words are rare and inserted at random places, so they have a low
# generator probability: the tokens where the reward should jump.
GOOD_WORDS = ("excellent", "accurate", "clear", "thoughtful", "precise")
BAD_WORDS = ("wrong", "rude", "useless", "confusing", "careless")
# The phrase the suffix probe attaches to one side of each pair.
SUFFIX = ("hope", "this", "helps")

PROMPT_TEMPLATES = (
    "Describe the {thing} in {place}.",
    "What do you think about the {thing} in {place}?",
    "Tell me something about the {thing} in {place}.",
    "Give a short opinion on the {thing} in {place}.",
    "How would you summarize the {thing} in {place}?",
)
PROMPT_THINGS = ("weather", "food", "music", "traffic", "architecture", "markets", "parks", "museums")
PROMPT_PLACES = ("Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Nairobi", "Sydney", "Toronto")

MIN_WORDS, MAX_WORDS = 15, 40  # response length in words: short enough for CPU training
MAX_DECISIVE = 3  # at most this many GOOD and this many BAD words per response
FILLER_JUMP = 0.1  # chance that the filler leaves its cycle for a random word
LENGTH_GAP = (5, 10)  # words by which the longer side of a length-probe pair is longer

BON_CANDIDATES = 8  # candidates per best-of-N prompt
HELD_OUT_BUCKETS = 5  # 1 in 5 arithmetic expressions is reserved for test/bon
ADDITION_TERMS = (4, 5)  # numbers per addition problem

PREFERENCE_TASKS = ("noisy", "length", "suffix")


@dataclass(frozen=True)
class SyntheticData:
    """A generated task in memory: rows per output file plus the task.json content."""

    files: dict[str, list[dict]]
    info: dict


# --- true reward ------------------------------------------------------------


def _normalize(word: str) -> str:
    """Strip punctuation and case, so sampled text ("Clear,") is judged like ours."""
    return word.strip(".,;:!?\"'()").lower()


def true_reward(task: str, response: str) -> float:
    """The true reward of a response to a preference task: #good - #bad words.

    It ignores the filler and the spurious features (length, suffix), so a
    reward model, a best-of-N pick or a DPO policy can be judged by what the
    data was built to reward rather than by what it correlates with.
    """
    if task in CALCULATION_TASKS:
        raise UserError(f"{task} has no scalar true reward; use arithmetic_is_correct(prompt, response)")
    if task not in PREFERENCE_TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(PREFERENCE_TASKS)}")
    words = [_normalize(w) for w in response.split()]
    return float(sum(w in GOOD_WORDS for w in words) - sum(w in BAD_WORDS for w in words))


def decisive_word_mask(response: str) -> list[bool]:
    """Per whitespace word of ``response``: is it one of the words that set the reward?

    Lets a per-token attribution metric check whether a reward model's
    reward changes where the true reward does.
    """
    return [_normalize(w) in GOOD_WORDS or _normalize(w) in BAD_WORDS for w in response.split()]


# --- preference responses ---------------------------------------------------


def _prompt(rng: random.Random) -> str:
    """A short varied prompt; responses ignore it, so it never decides the label."""
    template = rng.choice(PROMPT_TEMPLATES)
    return template.format(thing=rng.choice(PROMPT_THINGS), place=rng.choice(PROMPT_PLACES))


def _filler(rng: random.Random, n_words: int) -> list[str]:
    """``n_words`` from the near-deterministic filler process."""
    position = rng.randrange(len(FILLER_WORDS))
    words = []
    for _ in range(n_words):
        words.append(FILLER_WORDS[position])
        if rng.random() < FILLER_JUMP:
            position = rng.randrange(len(FILLER_WORDS))
        else:
            position = (position + 1) % len(FILLER_WORDS)
    return words


def _response(rng: random.Random, n_words: int, n_good: int, n_bad: int, *, suffix: bool) -> str:
    """A response of exactly ``n_words`` words with the given decisive words.

    Decisive words replace filler rather than add to it, so the length of a
    response says nothing about its true reward.
    """
    tail = list(SUFFIX) if suffix else []
    words = _filler(rng, n_words - n_good - n_bad - len(tail))
    decisive = [rng.choice(GOOD_WORDS) for _ in range(n_good)] + [rng.choice(BAD_WORDS) for _ in range(n_bad)]
    rng.shuffle(decisive)
    for word in decisive:
        words.insert(rng.randint(0, len(words)), word)
    return " ".join(words + tail)


def _decisive_counts(rng: random.Random) -> tuple[tuple[int, int], tuple[int, int]]:
    """(good, bad) counts for the better and the worse response of a pair.

    Their true rewards always differ, so every clean pair has a right answer.
    """
    while True:
        a = (rng.randint(0, MAX_DECISIVE), rng.randint(0, MAX_DECISIVE))
        b = (rng.randint(0, MAX_DECISIVE), rng.randint(0, MAX_DECISIVE))
        if a[0] - a[1] != b[0] - b[1]:
            return (a, b) if a[0] - a[1] > b[0] - b[1] else (b, a)


def _pair_lengths(rng: random.Random, task: str, chosen_has_feature: bool) -> tuple[int, int]:
    """Word counts (chosen, rejected); only the length probe ties them to the label."""
    if task != "length":
        return rng.randint(MIN_WORDS, MAX_WORDS), rng.randint(MIN_WORDS, MAX_WORDS)
    short = rng.randint(MIN_WORDS, MAX_WORDS - LENGTH_GAP[1])
    long = short + rng.randint(*LENGTH_GAP)
    return (long, short) if chosen_has_feature else (short, long)


def _chosen_has_feature(rng: random.Random, relation: str) -> bool:
    """Whether the labelled chosen side carries the spurious feature in this pair."""
    if relation == "mixed":
        return rng.random() < 0.5
    return relation == "chosen"


def _preference_split(
    task: str, split: str, seed: int, n: int, flip: float, relation: str
) -> tuple[list[dict], list[str]]:
    """``n`` pairwise rows and the ids of those whose label was flipped.

    The flip is decided before the spurious feature is attached, so in the
    probes the feature follows the (possibly wrong) label, as a shortcut in
    real data would. ``relation`` says which side carries the feature:
    "chosen", "rejected", "mixed" (a coin per pair) or "none" (noisy task).
    """
    rng = random.Random(f"icrm:{task}:{split}:{seed}")
    flipped = set(rng.sample(range(n), round(flip * n)))
    rows = []
    for i in range(n):
        prompt = _prompt(rng)
        better, worse = _decisive_counts(rng)
        chosen, rejected = (worse, better) if i in flipped else (better, worse)
        feature = _chosen_has_feature(rng, relation)
        n_chosen, n_rejected = _pair_lengths(rng, task, feature)
        rows.append(
            {
                "id": f"{task}-{split}-{i:05d}",
                "prompt": prompt,
                "chosen": _response(rng, n_chosen, *chosen, suffix=task == "suffix" and feature),
                "rejected": _response(rng, n_rejected, *rejected, suffix=task == "suffix" and not feature),
                "subset": f"{task}-{split}",
            }
        )
    return rows, [rows[i]["id"] for i in sorted(flipped)]


# --- arithmetic ---------------------------------------------------------------

Step = tuple[int, str, int, int]  # left operand, operator, right operand, stated result

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}

STEP_RE = re.compile(r"Step (\d+): (-?\d+) ([-+*]) (-?\d+) = (-?\d+)\.")
ANSWER_RE = re.compile(r"Answer: (-?\d+)")
PROMPT_RE = re.compile(r"Compute (\d+(?: [-+*] \d+)+)\.")


def _derive(numbers: list[int], ops: list[str], slip: tuple[int, int] | None = None) -> list[Step]:
    """The steps that evaluate ``numbers``/``ops`` (``*`` first, then left to right).

    ``slip = (k, delta)`` makes step ``k`` state a result off by ``delta``;
    later steps compute correctly from that wrong value, so the error reaches
    the answer. Operands are 1..9, so no later step can cancel it.
    """
    numbers, ops = list(numbers), list(ops)
    steps: list[Step] = []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        result = OPERATORS[ops[i]](numbers[i], numbers[i + 1])
        if slip is not None and slip[0] == len(steps):
            result += slip[1]
        steps.append((numbers[i], ops[i], numbers[i + 1], result))
        numbers[i : i + 2] = [result]
        del ops[i]
    return steps


def _render_steps(steps: list[Step]) -> str:
    lines = [f"Step {k}: {a} {op} {b} = {c}." for k, (a, op, b, c) in enumerate(steps, start=1)]
    return " ".join(lines) + f" Answer: {steps[-1][3]}"


def _expression(numbers: list[int], ops: list[str]) -> str:
    parts = [str(numbers[0])]
    for op, number in zip(ops, numbers[1:]):
        parts += [op, str(number)]
    return " ".join(parts)


def _held_out(numbers: list[int], ops: list[str]) -> bool:
    """Whether an expression is reserved for test/bon: a hash of its text, so whatever the sizes,
    held-out problems never occur in training."""
    return zlib.crc32(_expression(numbers, ops).encode()) % HELD_OUT_BUCKETS == 0


def _problem(rng: random.Random, held_out: bool) -> tuple[list[int], list[str]]:
    """A random expression of 3-4 one-digit numbers with at most one ``*``."""
    while True:
        ops = [rng.choice("+-") for _ in range(rng.randint(2, 3))]
        if rng.random() < 0.6:
            ops[rng.randrange(len(ops))] = "*"
        numbers = [rng.randint(1, 9) for _ in range(len(ops) + 1)]
        if _held_out(numbers, ops) == held_out:
            return numbers, ops


def _solution(rng: random.Random, numbers: list[int], ops: list[str], correct: bool) -> str:
    """A worked solution; an incorrect one has one slipped step that propagates."""
    slip = None if correct else (rng.randrange(len(ops)), rng.choice((-3, -2, -1, 1, 2, 3)))
    return _render_steps(_derive(numbers, ops, slip))


def _addition_problem(rng: random.Random, held_out: bool) -> tuple[list[int], list[str]]:
    """4-5 one-digit numbers to add whose running sum crosses a ten at least once (a carry to drop)."""
    while True:
        numbers = [rng.randint(1, 9) for _ in range(rng.randint(*ADDITION_TERMS))]
        ops = ["+"] * (len(numbers) - 1)
        sums = list(itertools.accumulate(numbers))
        if any(a // 10 != b // 10 for a, b in itertools.pairwise(sums)) and _held_out(numbers, ops) == held_out:
            return numbers, ops


def _addition_solution(rng: random.Random, numbers: list[int], ops: list[str], correct: bool) -> str:
    """Running sums, step by step; an incorrect one drops carries.

    At each step whose sum crosses a ten, the incorrect solver drops the carry
    with probability 1/2 (at least once per solution): that step's result is
    10 too small and later steps continue from it, so the answer is off by a
    multiple of ten and every later step looks right on its own.
    """
    while True:
        total, steps = numbers[0], []
        for number in numbers[1:]:
            result = total + number
            if not correct and result // 10 != total // 10 and rng.random() < 0.5:
                result -= 10
            steps.append((total, "+", number, result))
            total = result
        if correct or total != sum(numbers):
            return _render_steps(steps)


# calculation tasks (arithmetic_is_correct checks them): name -> (problem maker, solution writer)
CALCULATION_TASKS = {"arithmetic": (_problem, _solution), "addition": (_addition_problem, _addition_solution)}


def arithmetic_is_correct(prompt: str, response: str) -> bool:
    """Whether ``response`` solves the arithmetic ``prompt``: every step right and the answer right.

    The prompt fixes one derivation (``*`` first, then left to right), so the
    steps are re-derived from it and compared one by one: a response with a
    wrong step is wrong even if its final number happens to match.
    """
    match = PROMPT_RE.search(prompt)
    if match is None:
        raise UserError(f"not an arithmetic prompt: {prompt!r}")
    tokens = match.group(1).split()
    numbers, ops = [int(t) for t in tokens[0::2]], tokens[1::2]
    expected = [(k, *step) for k, step in enumerate(_derive(numbers, ops), start=1)]
    stated = [(int(k), int(a), op, int(b), int(c)) for k, a, op, b, c in STEP_RE.findall(response)]
    answer = ANSWER_RE.search(response)
    return stated == expected and answer is not None and int(answer.group(1)) == expected[-1][4]


def _arithmetic_prompt(numbers: list[int], ops: list[str]) -> str:
    return f"Compute {_expression(numbers, ops)}."


def _pointwise_split(task: str, split: str, seed: int, n: int, flip: float) -> tuple[list[dict], list[str]]:
    """``n`` pointwise rows of a step task, half correct, and the ids whose label was flipped."""
    problem, solution = CALCULATION_TASKS[task]
    rng = random.Random(f"icrm:{task}:{split}:{seed}")
    flipped = set(rng.sample(range(n), round(flip * n)))
    rows = []
    for i in range(n):
        numbers, ops = problem(rng, held_out=split != "train")
        correct = rng.random() < 0.5
        rows.append(
            {
                "id": f"{task}-{split}-{i:05d}",
                "prompt": _arithmetic_prompt(numbers, ops),
                "response": solution(rng, numbers, ops, correct),
                "label": int(correct != (i in flipped)),
            }
        )
    return rows, [rows[i]["id"] for i in sorted(flipped)]


def _best_of_n_split(task: str, seed: int, n: int) -> list[dict]:
    """``n`` held-out prompts with candidates of varying quality, as a policy would sample.

    Each prompt gets its own success rate (0.2-0.6), so some prompts are
    easy, some hard, and most have both correct and incorrect candidates.
    """
    problem, solution = CALCULATION_TASKS[task]
    rng = random.Random(f"icrm:{task}:bon:{seed}")
    rows = []
    for i in range(n):
        numbers, ops = problem(rng, held_out=True)
        success = rng.uniform(0.2, 0.6)
        labels = [int(rng.random() < success) for _ in range(BON_CANDIDATES)]
        rows.append(
            {
                "id": f"{task}-bon-{i:05d}",
                "prompt": _arithmetic_prompt(numbers, ops),
                "candidates": [solution(rng, numbers, ops, bool(label)) for label in labels],
                "labels": labels,
                "answer": str(_derive(numbers, ops)[-1][3]),
            }
        )
    return rows


# --- tasks --------------------------------------------------------------------


def _check_sizes(n_train: int, n_test: int, flip: float) -> None:
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(flip, bool) or not isinstance(flip, (int, float)) or not 0.0 <= flip <= 1.0:
        raise UserError(f"flip must be a share between 0 and 1, got {flip!r}")


def _task_data(
    task: str,
    seed: int,
    n_train: int,
    n_test: int,
    flip: float,
    flipped_ids: list[str],
    files: dict[str, list[dict]],
    **extra,
) -> SyntheticData:
    info = {
        "task": task,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "flip": flip,
        "n_flipped": len(flipped_ids),
        "flipped_ids": flipped_ids,
        "files": {name: len(rows) for name, rows in files.items()},
        **extra,
    }
    return SyntheticData(files=files, info=info)


def _preference_info() -> dict:
    return {"true_reward": "#good - #bad words", "good_words": list(GOOD_WORDS), "bad_words": list(BAD_WORDS)}


def generate_noisy(*, seed: int = 0, n_train: int = 300, n_test: int = 500, flip: float = 0.25) -> SyntheticData:
    """Noisy preferences: few training pairs with a share of labels flipped, clean test pairs.

    A reward model that memorizes the training labels fits the noise; one
    that finds the decisive words generalizes to the clean held-out pairs.
    Files: train.jsonl, test.jsonl (pairwise) and prompts.jsonl (the test
    prompts, for sampling from a policy later).
    """
    _check_sizes(n_train, n_test, flip)
    train, flipped = _preference_split("noisy", "train", seed, n_train, flip, relation="none")
    test, _ = _preference_split("noisy", "test", seed, n_test, 0.0, relation="none")
    files = {"train.jsonl": train, "test.jsonl": test, "prompts.jsonl": [{"prompt": r["prompt"]} for r in test]}
    return _task_data("noisy", seed, n_train, n_test, flip, flipped, files, **_preference_info())


def _probe(task: str, seed: int, n_train: int, n_test: int, flip: float, **extra) -> SyntheticData:
    """A spurious-feature probe: the feature marks the chosen side in training only."""
    _check_sizes(n_train, n_test, flip)
    train, flipped = _preference_split(task, "train", seed, n_train, flip, relation="chosen")
    mixed, _ = _preference_split(task, "mixed", seed, n_test, 0.0, relation="mixed")
    reversed_, _ = _preference_split(task, "reversed", seed, n_test, 0.0, relation="rejected")
    files = {"train.jsonl": train, "test_mixed.jsonl": mixed, "test_reversed.jsonl": reversed_}
    return _task_data(task, seed, n_train, n_test, flip, flipped, files, **_preference_info(), **extra)


def generate_length(*, seed: int = 0, n_train: int = 500, n_test: int = 300, flip: float = 0.0) -> SyntheticData:
    """Length probe: in training the chosen response is also 5-10 words longer.

    test_mixed.jsonl makes length independent of the label and
    test_reversed.jsonl makes the chosen side shorter, so accuracy there
    shows how much a reward model learned "longer is better" instead of
    the decisive words.
    """
    return _probe("length", seed, n_train, n_test, flip, length_gap=list(LENGTH_GAP))


def generate_suffix(*, seed: int = 0, n_train: int = 500, n_test: int = 300, flip: float = 0.0) -> SyntheticData:
    """Suffix probe: in training the chosen response ends with "hope this helps".

    test_mixed.jsonl puts the suffix on a random side and
    test_reversed.jsonl on the rejected side. Lengths stay independent of the
    label (the suffix replaces filler), so only the phrase is a shortcut.
    """
    return _probe("suffix", seed, n_train, n_test, flip, suffix=" ".join(SUFFIX))


def generate_arithmetic(*, seed: int = 0, n_train: int = 1000, n_test: int = 300, flip: float = 0.0) -> SyntheticData:
    """Step-checked arithmetic: pointwise correctness labels and best-of-N candidates.

    Files: train.jsonl and test.jsonl (pointwise, about half correct; ``flip``
    flips a share of training labels) and bon.jsonl (``n_test`` held-out
    prompts with 8 candidates, their labels and the answer). Test and bon
    expressions never occur in training.
    """
    return _step_task("arithmetic", seed, n_train, n_test, flip)


def generate_addition(*, seed: int = 0, n_train: int = 1000, n_test: int = 300, flip: float = 0.0) -> SyntheticData:
    """Step-checked addition with dropped carries: the files of :func:`generate_arithmetic`.

    Problems add 4-5 one-digit numbers ("Compute 7 + 5 + 9 + 3.") and are
    checked by :func:`arithmetic_is_correct` like arithmetic ones.
    """
    return _step_task("addition", seed, n_train, n_test, flip)


def _step_task(task: str, seed: int, n_train: int, n_test: int, flip: float) -> SyntheticData:
    _check_sizes(n_train, n_test, flip)
    train, flipped = _pointwise_split(task, "train", seed, n_train, flip)
    test, _ = _pointwise_split(task, "test", seed, n_test, 0.0)
    files = {"train.jsonl": train, "test.jsonl": test, "bon.jsonl": _best_of_n_split(task, seed, n_test)}
    return _task_data(task, seed, n_train, n_test, flip, flipped, files, n_candidates=BON_CANDIDATES)


# --- steps ------------------------------------------------------------------------

# A day-counting chain: "It is Tuesday. Count forward 2 days, then 1, then 2. What day is it?" is solved
# one line per stride, "2 days after Tuesday is Thursday". Each step is checkable from its own line and the
# line before it (a 7 x 2 table of facts plus a copy); one wrong result makes the chain wrong from that step
# on, and later steps count on correctly from the wrong day, as a solver that does not notice its slip
# would. Pilot runs of a PRM alone (tiny preset, 1000 chains, 10 epochs) fixed the strides: with 1, 2 and 3
# it needed ~30 epochs to learn the check (step AUROC 0.70 after 10), with 1 and 2 it reaches 0.87.
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
STRIDES = (1, 2)
CHAIN_STEPS = (3, 6)  # steps per chain, inclusive
LATER_SLIP = 0.15  # chance of a further wrong result at each step after the first one
STEPS_PROMPT_RE = re.compile(r"It is (\w+)\. Count forward (\d+) days?((?:, then \d+)*)\. What day is it\?")
DAY_STEP_RE = re.compile(r"(\d+) days? after (\w+) is (\w+)")


def _steps_problem(rng: random.Random, held_out: bool) -> tuple[int, list[int]]:
    """A start day and strides; held-out problems (test, bon) never occur in training."""
    while True:
        start = rng.randrange(len(DAYS))
        strides = [rng.choice(STRIDES) for _ in range(rng.randint(*CHAIN_STEPS))]
        bucket = zlib.crc32(_steps_prompt(start, strides).encode()) % HELD_OUT_BUCKETS
        if (bucket == 0) == held_out:
            return start, strides


def _steps_prompt(start: int, strides: list[int]) -> str:
    then = "".join(f", then {s}" for s in strides[1:])
    return f"It is {DAYS[start]}. Count forward {strides[0]} day{'s' if strides[0] > 1 else ''}{then}. What day is it?"


def _steps_chain(rng: random.Random, start: int, strides: list[int], first_wrong: int) -> list[str]:
    """The steps of a chain whose first wrong result is at ``first_wrong`` (−1: none)."""
    steps, day = [], start
    for k, stride in enumerate(strides):
        result = (day + stride) % len(DAYS)
        if k == first_wrong or (0 <= first_wrong < k and rng.random() < LATER_SLIP):
            result = (result + rng.randrange(1, len(DAYS))) % len(DAYS)
        steps.append(f"{stride} day{'s' if stride > 1 else ''} after {DAYS[day]} is {DAYS[result]}")
        day = result
    return steps


def step_labels(prompt: str, steps: list[str]) -> list[int]:
    """True label of every step of a day-counting chain: 1 while every line so far is the right one.

    A line is right when it starts from the true day so far, adds the
    prompt's next stride and states the true result; a prefix with a wrong
    line stays wrong, even if a later slip lands on the right day again.
    """
    match = STEPS_PROMPT_RE.fullmatch(prompt)
    if match is None:
        raise UserError(f"not a day-counting prompt: {prompt!r}")
    day = DAYS.index(match.group(1))
    strides = [int(match.group(2))] + [int(x) for x in re.findall(r"\d+", match.group(3))]
    labels, right = [], True
    for k, step in enumerate(steps):
        stated = DAY_STEP_RE.fullmatch(step)
        expected = (day + strides[k]) % len(DAYS) if k < len(strides) else None
        right = right and expected is not None and stated is not None and (
            (int(stated.group(1)), stated.group(2), stated.group(3)) == (strides[k], DAYS[day], DAYS[expected])
        )
        labels.append(int(right))
        if expected is not None:
            day = expected
    return labels


def _stepwise_split(split: str, seed: int, n: int, flip: float) -> tuple[list[dict], list[str]]:
    """``n`` chains, half of them right, the first slip of the others at a uniformly random step.

    ``flip`` flips that share of all step labels (training noise); the flipped
    steps are named ``<id>/<step>``.
    """
    rng = random.Random(f"icrm:steps:{split}:{seed}")
    rows = []
    for i in range(n):
        start, strides = _steps_problem(rng, held_out=split != "train")
        first_wrong = -1 if rng.random() < 0.5 else rng.randrange(len(strides))
        prompt = _steps_prompt(start, strides)
        steps = _steps_chain(rng, start, strides, first_wrong)
        rows.append({"id": f"steps-{split}-{i:05d}", "prompt": prompt, "completions": steps,
                     "labels": [bool(y) for y in step_labels(prompt, steps)]})
    slots = [(r, k) for r in range(n) for k in range(len(rows[r]["labels"]))]
    flipped = sorted(rng.sample(slots, round(flip * len(slots))))
    for r, k in flipped:
        rows[r]["labels"][k] = not rows[r]["labels"][k]
    return rows, [f"{rows[r]['id']}/{k}" for r, k in flipped]


def _steps_best_of_n(seed: int, n: int) -> list[dict]:
    """``n`` held-out prompts with 8 step-split candidates each (steps joined by newlines)."""
    rng = random.Random(f"icrm:steps:bon:{seed}")
    rows = []
    for i in range(n):
        start, strides = _steps_problem(rng, held_out=True)
        success = rng.uniform(0.2, 0.6)
        candidates, labels = [], []
        for _ in range(BON_CANDIDATES):
            first_wrong = -1 if rng.random() < success else rng.randrange(len(strides))
            steps = _steps_chain(rng, start, strides, first_wrong)
            candidates.append("\n".join(steps))
            labels.append(step_labels(_steps_prompt(start, strides), steps)[-1])
        rows.append({"id": f"steps-bon-{i:05d}", "prompt": _steps_prompt(start, strides), "candidates": candidates,
                     "labels": labels})
    return rows


def generate_steps(*, seed: int = 0, n_train: int = 1000, n_test: int = 300, flip: float = 0.0) -> SyntheticData:
    """Process supervision on day-counting chains: a true label per step.

    Files: train.jsonl and test.jsonl in TRL's stepwise format (prompt,
    completions, labels; about half the chains right), test_processbench.jsonl
    (the test chains as ProcessBench rows: problem, steps, label = first wrong
    step or −1) and bon.jsonl (``n_test`` held-out prompts with 8 candidates
    whose steps are joined by newlines, and their outcome labels; no
    ``answer``, since ``icrm bon``'s majority vote reads numbers, not days).
    Test and bon prompts never occur in training.
    """
    _check_sizes(n_train, n_test, flip)
    train, flipped = _stepwise_split("train", seed, n_train, flip)
    test, _ = _stepwise_split("test", seed, n_test, 0.0)
    processbench = [
        {"id": r["id"], "problem": r["prompt"], "steps": r["completions"],
         "label": next((k for k, y in enumerate(r["labels"]) if not y), -1)}
        for r in test
    ]
    files = {"train.jsonl": train, "test.jsonl": test, "test_processbench.jsonl": processbench,
             "bon.jsonl": _steps_best_of_n(seed, n_test)}
    return _task_data("steps", seed, n_train, n_test, flip, flipped, files, n_candidates=BON_CANDIDATES,
                      step_separator="\n", days=list(DAYS), strides=list(STRIDES))


TASKS: dict[str, Callable[..., SyntheticData]] = {
    "noisy": generate_noisy,
    "length": generate_length,
    "suffix": generate_suffix,
    "arithmetic": generate_arithmetic,
    "addition": generate_addition,
    "steps": generate_steps,
}
