"""Prompts as chat messages: the one place a prompt or a response becomes ``{role, content}`` turns.

Prompts are kept as message lists and responses as the assistant's text, so
that a sequence is rendered by the tokenizer's chat template exactly as a
transformers user would render ``[user, assistant]`` messages, and the scores
icrm computes agree with those of the exported HF model. A prompt string is
one user turn, or an Anthropic-HH dialogue split into its turns.
"""

from __future__ import annotations

import re
from typing import Any

from .readers import DataError

Message = dict[str, str]


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_dialogue(text: str) -> list[Message] | None:
    """Split an Anthropic-HH style ``\\n\\nHuman: … \\n\\nAssistant: …`` string."""
    if not text.startswith("\n\nHuman:") and not text.startswith("Human:"):
        return None
    text = text if text.startswith("\n\n") else "\n\n" + text
    parts = _HH_TURN.split(text)[1:]
    messages = []
    for role, content in zip(parts[0::2], parts[1::2]):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return messages


def messages_of(prompt: str | list[Message]) -> list[Message]:
    """A prompt as chat messages: a string is one user turn (what the API's ``prompt`` arguments accept)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def first_user_turn(prompt: str | list[Message]) -> str:
    """The text of a prompt's first user turn: what pairs of one instruction (or one opening question) share."""
    return next((m["content"] for m in messages_of(prompt) if m["role"] == "user"), "")


def without_open_turn(messages: list[Message]) -> list[Message]:
    """The messages without a trailing empty assistant turn (an implicit prompt's "Assistant:" slot)."""
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"].strip():
        return messages[:-1]
    return messages


def as_messages(value: Any, source: str, line: int, name: str) -> list[Message]:
    """A data row's prompt field as validated messages (a string may hold an HH dialogue)."""
    if isinstance(value, str):
        return parse_hh_dialogue(value) or messages_of(value)
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(source, "expected a string or a list of {role, content} messages", line, name)


def response_text(value: Any, source: str, line: int, name: str) -> str:
    """The assistant text of a response given as a string or a message list."""
    if isinstance(value, list):
        messages = as_messages(value, source, line, name)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise DataError(source, "a message-list response must be one assistant message", line, name)
        value = messages[0]["content"]
    if not isinstance(value, str):
        raise DataError(source, f"expected text, got {type(value).__name__}", line, name)
    if not value.strip():
        raise DataError(source, "empty response", line, name)
    return value
