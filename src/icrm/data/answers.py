"""Final answers of math solutions (GSM8K-style), for labelling candidates right or wrong.

Best-of-N on graded solutions needs one rule for "this candidate reached the
reference answer"; the GSM8K converter and ``icrm bon`` both use this one.
"""

from __future__ import annotations

import re

_ANSWER_PATTERNS = (
    re.compile(r"####\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"Answer:\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"(?:^|\n)A:\s*\$?(-?[\d,]*\.?\d+)"),
    re.compile(r"\\boxed\{([^}]*)\}"),
)
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: ``#### 42``, ``Answer: 42``, ``\\boxed{42}``, else the last number."""
    for pattern in _ANSWER_PATTERNS:
        found = pattern.findall(text)
        if found:
            return canonical_answer(found[-1])
    numbers = _NUMBER.findall(text)
    return canonical_answer(numbers[-1]) if numbers else None


def canonical_answer(answer: str) -> str:
    """``1,234.`` → ``1234``, ``2.50`` → ``2.5``: how two answers compare equal; non-numbers as given."""
    answer = answer.strip().replace(",", "").rstrip(".")
    try:
        value = float(answer)
    except ValueError:
        return answer
    return str(int(value)) if value.is_integer() else str(value)
