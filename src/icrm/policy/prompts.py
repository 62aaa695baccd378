"""Prompts to sample from: read from any data file, keyed for overlap checks, rendered for generation.

Prompts are always rendered with the policy's chat template
(``add_generation_prompt=True``) and responses are scored through the same
template, so sampling, DPO and reward scoring all see one token layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data import FORMAT_FIELDS, DataError, Message, as_messages, load_examples, read_rows, without_open_turn
from ..errors import UserError


@dataclass
class Prompt:
    """One prompt to sample from, as chat messages, with its source row's id and line."""

    messages: list[Message]
    id: str | None = None
    line: int = 0


def load_prompts(source: str | Path) -> list[Prompt]:
    """Prompts from a prompts file (``prompt`` per row) or any pairwise/pointwise/bon file.

    A plain prompts file lets users sample on new prompts; accepting every data
    format lets them sample on the prompts of a test set without converting it.
    Rows are kept in order, duplicates included, so outputs line up with the
    input file. A trailing empty assistant turn (HH-style prompt strings end in
    ``Assistant:``) is dropped, since generation adds the assistant turn itself.
    """
    name = str(source)
    rows = read_rows(source)
    if any(f in rows[0].data for fields in FORMAT_FIELDS.values() for f in fields):
        examples = load_examples(source).examples
        return [Prompt(without_open_turn(ex.prompt), ex.id, ex.line) for ex in examples]
    prompts = []
    for row in rows:
        if row.data.get("prompt") is None:
            present = ", ".join(sorted(row.data)) or "none"
            raise DataError(name, f"missing column (row has {present})", row.line, "prompt")
        messages = without_open_turn(as_messages(row.data["prompt"], name, row.line, "prompt"))
        if not messages or not any(m["content"].strip() for m in messages):
            raise DataError(name, "empty prompt", row.line, "prompt")
        row_id = row.data.get("id")
        prompts.append(Prompt(messages, None if row_id is None else str(row_id), row.line))
    return prompts


def prompt_value(messages: list[Message]) -> str | list[Message]:
    """A single user turn as a plain string (readable files), anything else as messages."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


def prompt_key(messages: list[Message]) -> str:
    """A comparison key for a prompt: roles and text with case and whitespace normalized.

    Used to find training prompts that also occur in a test set, so a policy is
    not trained on the prompts it will be judged on.
    """
    return json.dumps([[m["role"], " ".join(m["content"].lower().split())] for m in messages])


def prompt_keys(source: str | Path | None) -> set[str]:
    """The :func:`prompt_key` of every prompt in ``source`` (an ``--exclude-prompts`` file); none for ``None``."""
    return {prompt_key(p.messages) for p in load_prompts(source)} if source else set()


def render_prompts(tokenizer, prompts: list[Prompt]) -> list[str]:
    """Chat-template text that ends where the assistant's answer starts."""
    if not tokenizer.chat_template:
        raise UserError("the policy's tokenizer has no chat template (train the policy with `icrm sft`)")
    return [tokenizer.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False) for p in prompts]
