"""The one rule for a math solution's final answer (GSM8K converter and `icrm bon`)."""

import pytest

from icrm.data import canonical_answer, extract_answer


@pytest.mark.parametrize("text, answer", [
    ("She pays 3 + 4 = 7 dollars.\n#### 1,234", "1234"),
    ("so the total is 12.\nAnswer: 12.50", "12.5"),
    ("Q: how many?\nA: $18", "18"),
    ("the result is \\boxed{42} and then 7", "42"),
    ("first 3, then 5 apples.", "5"),  # no marker: the last number
    ("no numbers here", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_canonical_answer_compares_numbers_by_value_and_keeps_other_text():
    assert canonical_answer(" 1,000. ") == canonical_answer("1000.0") == "1000"
    assert canonical_answer("x+1") == "x+1"
