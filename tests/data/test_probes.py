"""The real-data split and probes: held-out instructions, the length-reversed pairs and the verbosity attack."""

from __future__ import annotations

from icrm.data import VERBOSITY_PADDING, chosen_shorter, first_user_turn, split_by_instruction, verbosity_attack


def dialogue(opening: str, follow_up: str) -> list[dict]:
    return [{"role": "user", "content": opening}, {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": follow_up}]


def test_split_holds_out_a_share_of_instructions_and_keeps_each_on_one_side():
    rows = [{"prompt": f"instruction {i}", "chosen": "a", "rejected": "bb"} for i in range(10) for _ in range(3)]
    rows += [{"prompt": dialogue(f"instruction {i}", "and then?"), "chosen": "a", "rejected": "b"} for i in range(10)]
    train, test = split_by_instruction(rows, 0.2, seed=0)
    held = {first_user_turn(r["prompt"]) for r in test}
    assert len(held) == 2 and len(test) == 2 * 4  # a dialogue goes where its opening instruction goes
    assert not held & {first_user_turn(r["prompt"]) for r in train} and len(train) + len(test) == len(rows)
    assert split_by_instruction(rows, 0.2, seed=0) == (train, test) != split_by_instruction(rows, 0.2, seed=1)


def test_probes_keep_the_pairs_whose_chosen_is_shorter_and_pad_every_rejected():
    rows = [{"prompt": "p", "chosen": "short", "rejected": "much longer"},
            {"prompt": "q", "chosen": "a long chosen answer", "rejected": "brief"}]
    assert chosen_shorter(rows) == rows[:1]
    attacked = verbosity_attack(rows)
    assert [r["rejected"] for r in attacked] == [r["rejected"] + VERBOSITY_PADDING for r in rows]
    assert [r["chosen"] for r in attacked] == [r["chosen"] for r in rows] and rows[0]["rejected"] == "much longer"
