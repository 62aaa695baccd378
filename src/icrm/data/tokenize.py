"""Examples to token sequences: chat-template rendering, where the response starts, and length limits.

The whole conversation is tokenized in one piece and the response and its
steps are located by character offsets, so the tokens icrm trains and scores
on are the tokens a transformers user gets from the same messages. Only a
tokenizer is needed here (no torch): batches are built in
:mod:`icrm.data.collate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .chat import Message
from .examples import StepExample, responses_of
from .steps import DEFAULT_SEPARATOR, join_steps, step_char_ends, tokens_at_chars


@dataclass
class Sequence:
    """A tokenized prompt+response; response tokens run from ``start`` to the end.

    ``step_ends`` (stepwise examples): the token index where each step's score is read.
    """

    input_ids: list[int]
    start: int
    step_ends: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizeStats:
    truncated: int = 0
    dropped: int = 0


def encode(tokenizer, prompt: list[Message], response: str, step_chars: list[int] | None = None) -> Sequence:
    """Render with the chat template and find where the response starts.

    The full conversation is tokenized in one piece, as a transformers user
    would, and the response is located by character offsets; tokenizing the
    prompt and the response separately could split the boundary differently.
    ``step_chars`` (exclusive character ends of steps in ``response``) asks
    for ``step_ends``: the token of each step's last character, except that
    the last step's score is read at the last token, where the outcome is.
    """
    prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prefix):
        raise ValueError("the chat template renders the prompt differently with and without a response")
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    start = next((i for i, (_, end) in enumerate(offsets) if end > len(prefix)), len(offsets))
    seq = Sequence(list(enc["input_ids"]), start)
    if step_chars is not None:
        at = full.find(response, len(prefix))
        if at < 0:
            raise ValueError("the chat template changes the response text, so its steps cannot be located")
        seq.step_ends = tokens_at_chars(offsets, [at + c for c in step_chars[:-1]]) + [seq.length - 1]
    return seq


def token_texts(tokenizer, prompt: list[Message], response: str, seq: Sequence, cut: int) -> list[str]:
    """The readable text of each response token of ``seq``.

    ``seq`` is :func:`encode`'s sequence less its first ``cut`` tokens (a
    prompt cut from the left; 0: uncut). Uses the fast tokenizer's character offsets into the rendered conversation,
    so the texts concatenate back to exactly the rendered response (a
    character split over several byte-level tokens goes to the first of them,
    the others get an empty string). Falls back to decoding token by token.
    """
    ids = seq.input_ids
    try:
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if list(enc["input_ids"])[cut:] == list(ids):
            offsets = offsets[cut:]
            prev_end = offsets[seq.start - 1][1] if seq.start > 0 else 0
            texts = []
            for begin, end in offsets[seq.start :]:
                begin = max(begin, prev_end)
                texts.append(full[begin:end] if end > begin else "")
                prev_end = max(prev_end, end)
            return texts
    except (NotImplementedError, KeyError, TypeError, ValueError):
        pass
    pieces = tokenizer.convert_ids_to_tokens(ids[seq.start :])
    return [tokenizer.convert_tokens_to_string([p]) for p in pieces]


def encode_steps(tokenizer, prompt: list[Message], steps: list[str], separator: str = DEFAULT_SEPARATOR) -> Sequence:
    """:func:`encode` of a chain of steps joined by ``separator``, with its ``step_ends``."""
    return encode(tokenizer, prompt, join_steps(steps, separator), step_char_ends(steps, separator))


def fit_length(seq: Sequence, max_length: int, truncation: str, stats: TokenizeStats) -> Sequence | None:
    """Cut an over-long sequence from the prompt's left, or drop it.

    A response that alone exceeds ``max_length`` is always dropped: cutting it
    would lose the final token, where the outcome reward is read.
    """
    if seq.length <= max_length:
        return seq
    response_len = seq.length - seq.start
    if truncation == "drop" or response_len > max_length:
        stats.dropped += 1
        return None
    stats.truncated += 1
    cut = seq.length - max_length
    return Sequence(seq.input_ids[cut:], seq.start - cut, [end - cut for end in seq.step_ends])


def cut_left(seq: Sequence, max_length: int, name: str) -> Sequence:
    """``seq`` with prompt tokens cut from the left to fit ``max_length``, for scoring one response.

    A response that alone is longer is a ``ValueError`` naming ``name``.
    """
    fitted = fit_length(seq, max_length, "left", TokenizeStats())
    if fitted is None:
        raise ValueError(f"{name}: {seq.length - seq.start} response tokens do not fit in max_length={max_length}")
    return fitted


def tokenize_examples(examples: list, tokenizer, max_length: int, truncation: str = "left", progress=None):
    """Tokenize pairwise or pointwise examples into lists of sequences.

    Returns ``(items, kept, stats)``: ``items[i]`` is the list of sequences of
    example ``kept[i]`` (chosen and rejected for a pair, one for a point).
    """
    if truncation not in ("left", "drop"):
        raise ValueError(f"truncation must be 'left' or 'drop', got {truncation!r}")
    stats = TokenizeStats()
    items, kept = [], []
    for index, ex in enumerate(examples):
        if isinstance(ex, StepExample):
            encoded = [encode_steps(tokenizer, ex.prompt, ex.steps, ex.separator)]
        else:
            encoded = [encode(tokenizer, ex.prompt, r) for r in responses_of(ex)]
        seqs = [fit_length(seq, max_length, truncation, stats) for seq in encoded]
        if progress is not None:
            progress()
        if any(s is None for s in seqs):
            continue
        items.append(seqs)
        kept.append(index)
    return items, kept, stats
