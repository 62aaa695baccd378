"""Reading request bodies: JSON fields checked one by one, texts tokenized exactly as ``icrm score`` does.

Bad input gets a 4xx answer ``{"error": "..."}`` naming the field and item:
400 for a body that is not JSON, 413 for a body over the size limit (refused
before it is read whole), too many texts or an over-long one, 422 for a
missing field or a wrong type. Nothing a client sends makes the server answer
with a traceback or stop serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..data import DataError, Message, Sequence, as_messages, encode, encode_steps, response_text, without_open_turn

_JSON_TYPES = {str: "string", bool: "boolean", int: "number", float: "number", dict: "object", list: "array"}


class RequestError(Exception):
    """A client's mistake, answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages (``null``, ``string``, ``array``, ...)."""
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


async def _read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length over the limit is refused before any of the body
    is read; a body without one (chunked) is read as it streams in and refused
    once it passes the limit, so no request makes the server hold more than
    ``limit`` bytes plus one chunk, whatever the client sends.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body: {declared} bytes, more than this server's limit of {limit} bytes (--max-body-size)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body: more than this server's limit of {limit} bytes (--max-body-size)")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request, max_body_size: int) -> dict:
    """The request's body as a JSON object, read within ``max_body_size`` bytes."""
    raw = await _read_body(request, max_body_size)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"invalid JSON body ({err})") from err
    if not isinstance(body, dict):
        raise RequestError(422, f"the body must be a JSON object, got {json_type(body)}")
    return body


def list_field(body: dict, name: str, max_items: int) -> list:
    """The required array ``body[name]``, of at most ``max_items`` items."""
    if name not in body:
        raise RequestError(422, f"{name}: missing field")
    value = body[name]
    if not isinstance(value, list):
        raise RequestError(422, f"{name}: expected an array, got {json_type(value)}")
    if len(value) > max_items:
        raise RequestError(413, f"{name}: {len(value)} items, more than this server's limit of {max_items} (--max-items)")
    return value


def bool_field(body: dict, name: str) -> bool:
    """The optional flag ``body[name]`` (false when absent)."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(422, f"{name}: expected true or false, got {json_type(value)}")
    return value


def string_field(body: dict, name: str, default: str) -> str:
    """The optional string ``body[name]`` (``default`` when absent)."""
    value = body.get(name, default)
    if not isinstance(value, str):
        raise RequestError(422, f"{name}: expected a string, got {json_type(value)}")
    return value


def _check_length(seq: Sequence, where: str, max_length: int) -> Sequence:
    if seq.length > max_length:
        raise RequestError(413, f"{where}: {seq.length} tokens, more than this server's limit of {max_length} (--max-length)")
    return seq


def text_sequences(tokenizer, texts: list, max_length: int) -> list[Sequence]:
    """``/get_reward`` texts as sequences scored at their last token (``start`` = last index)."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, f"query[{i}]: expected a string, got {json_type(text)}")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    seqs = []
    for i, row in enumerate(ids):
        if not row:
            raise RequestError(422, f"query[{i}]: empty text")
        seqs.append(_check_length(Sequence(list(row), len(row) - 1), f"query[{i}]", max_length))
    return seqs


@dataclass
class ScoreItem:
    """One ``/score`` pair, tokenized (``seq.step_ends`` set under ``per_step``)."""

    prompt: list[Message]
    response: str
    seq: Sequence


def score_items(
    tokenizer, prompts: list, responses: list, separator: str, max_length: int, per_step: bool = False
) -> list[ScoreItem]:
    """Validate and tokenize ``/score`` pairs exactly as ``icrm score`` renders them.

    ``per_step``: every response must be a list of steps, whose sequences get
    their ``step_ends`` from :func:`~icrm.data.encode_steps`, as ``icrm score
    --per-step`` does.
    """
    if len(prompts) != len(responses):
        raise RequestError(422, f"responses: {len(prompts)} prompts but {len(responses)} responses")
    items = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        try:
            messages = without_open_turn(as_messages(prompt, "body", None, f"prompts[{i}]"))
            steps = None
            if isinstance(response, list) and response and all(isinstance(s, str) for s in response):
                steps = response
                empty = next((k for k, s in enumerate(steps) if not s.strip()), None)
                if empty is not None:
                    raise RequestError(422, f"responses[{i}][{empty}]: empty step")
                response = separator.join(steps)
            elif per_step:
                raise RequestError(422, f"responses[{i}]: per_step needs the response as a list of step strings")
            text = response_text(response, "body", None, f"responses[{i}]")
            seq = encode_steps(tokenizer, messages, steps, separator) if per_step else encode(tokenizer, messages, text)
        except DataError as err:
            raise RequestError(422, str(err)) from err
        except ValueError as err:  # a chat template that renders the prompt, or the response text, differently
            raise RequestError(422, f"prompts[{i}]: {err}") from err
        items.append(ScoreItem(messages, text, _check_length(seq, f"responses[{i}]", max_length)))
    return items
