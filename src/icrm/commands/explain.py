"""``icrm explain``: per-token reward heatmaps of one prompt/response, or an index of pages for a data file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence as Seq

from ..data import (
    DEFAULT_SEPARATOR,
    BonExample,
    PairExample,
    StepExample,
    encode,
    load_examples,
    messages_of,
    responses_of,
    split_steps,
)
from ..errors import UserError
from ..explain import explain_responses, render_html, render_index, render_png
from ..modeling import RewardModel, fit_examples, load_generator, resolve_max_length
from ..outputs import check_output, staged_directory, staged_file


def _labelled_responses(example, per_step: bool, separator: str) -> list[tuple[str, str | list[str]]]:
    """An example's responses with the labels its page shows (chosen/rejected, candidate k, response)."""
    if isinstance(example, StepExample):
        return [("response", example.steps)]
    texts = [split_steps(t, separator) if per_step else t for t in responses_of(example)]
    if isinstance(example, PairExample):
        return list(zip(("chosen", "rejected"), texts))
    if isinstance(example, BonExample):
        return [(f"candidate {i + 1}", c) for i, c in enumerate(texts)]
    return [("response", texts[0])]


def explain_to_files(
    models: Seq[str],
    output: str | Path,
    *,
    prompt: str | None = None,
    response: str | None = None,
    data: str | None = None,
    limit: int = 20,
    generator: str | None = None,
    png: bool = False,
    max_length: int | None = None,
    per_step: bool = False,
    step_separator: str = DEFAULT_SEPARATOR,
    skip_invalid: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """``icrm explain``: one page for a prompt/response, or an index of pages for a data file.

    With ``--data`` the output is a directory holding ``index.html`` and one page
    per example; otherwise it is the page itself. Written atomically. Stepwise
    rows show their step boundaries and labels; ``per_step`` splits other
    responses into steps at ``step_separator`` and marks those. Lengths follow
    ``icrm score`` (:func:`icrm.modeling.fit_examples`); the default limit is
    the smallest of the models' defaults. An existing page, or a folder that is
    not an earlier ``explain`` output, is replaced only with ``overwrite``
    (:func:`icrm.outputs.check_output`).
    """
    if (data is None) == (prompt is None or response is None):
        raise UserError("give either --prompt and --response, or --data")
    if data is not None:
        check_output(output, "explain", overwrite)
    else:
        check_output(output, None, overwrite)
        if png:
            check_output(Path(output).with_suffix(".png"), None, overwrite)
    loaded = [(name, RewardModel.from_pretrained(name)) for name in models]
    tokenizer = loaded[0][1].tokenizer
    max_length = min(filter(None, (resolve_max_length(rm, max_length) for _, rm in loaded)), default=None)
    gen = load_generator(generator, tokenizer)

    def rows_for(prompt_value, responses, step_labels=None):
        try:
            rows = [explain_responses(rm, prompt_value, responses, Path(name).name or name, gen, max_length,
                                      step_separator) for name, rm in loaded]
        except ValueError as err:
            raise UserError(str(err)) from err
        for row in rows:
            row[0].step_labels = step_labels
        return rows

    if data is None:
        seq = encode(tokenizer, messages_of(prompt), response)
        if max_length is not None and seq.length - seq.start > max_length:
            raise UserError(f"--response: {seq.length - seq.start} tokens do not fit in --max-length {max_length}")
        rows = rows_for(prompt, [("response", split_steps(response, step_separator) if per_step else response)])
        with staged_file(output) as tmp:
            tmp.write_text(render_html("icrm explain", prompt, rows))
        written = [Path(output)]
        if png:
            written.append(render_png(rows, Path(output).with_suffix(".png")))
        return written
    examples = fit_examples(
        tokenizer, load_examples(data, limit=limit, skip_invalid=skip_invalid, step_separator=step_separator,
                                 require_labels=False),  # explaining reads no label
        max_length, skip_invalid,
    ).examples
    with staged_directory(output, "explain", overwrite) as staging:
        entries = []
        for i, ex in enumerate(examples, start=1):
            rows = rows_for(ex.prompt, _labelled_responses(ex, per_step, step_separator),
                            ex.labels if isinstance(ex, StepExample) else None)
            name = f"example-{i:04d}.html"
            (staging / name).write_text(render_html(f"example {i} (line {ex.line})", ex.prompt, rows))
            if png:
                render_png(rows, staging / name.replace(".html", ".png"))
            first = ex.prompt[-1]["content"] if ex.prompt else ""
            entries.append((name, f"{i}. {first[:80]}"))
        (staging / "index.html").write_text(render_index(entries, f"icrm explain: {data}"))
    return [Path(output) / "index.html"]
