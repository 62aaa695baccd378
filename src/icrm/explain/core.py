"""Per-token reward heatmaps: where along a response does the reward move?

A reward model scores every prefix: ``r_t`` is the reward of the prompt plus
the response up to token ``t`` and the outcome reward is ``R = r_e`` at the
last token. This module shows, for each response token, the change it causes,
``Δr_t = r_t - r_{t-1}``, where ``r_{s-1}`` (the *baseline*) is the reward of
the prompt alone (read at the position just before the first response token,
which a causal model computes without seeing the response). The changes
telescope: ``Σ Δr_t = R - r_{s-1}``.

Optionally a frozen generator gives ``w_t = p_gen(tok_t | tok_<t)``, the
probability of each response token given everything before it. That is the
weight the consistency regularizer puts on the step into token ``t`` (the pair
``(t-1, t)``): an ICRM-trained model is pushed to keep ``r`` flat across
high-probability tokens, so its ``Δr`` should concentrate on unlikely ones.

A response given as a list of steps (process rewards, :mod:`icrm.steps`) also
gets its step boundaries marked, each with the step's score ``σ(r)`` read at
its end (and ✓/✗ when the true step label is known).

Outputs: a self-contained HTML page (inline CSS and JS only, every text
escaped; one row per model so BT and ICRM can be compared on the same
responses, the responses of a row side by side), an index page linking to
per-example pages, a PNG rendering of the same heatmap, and two attribution
metrics (:func:`decisive_share`, :func:`rank_correlation`) for benchmarks.
"""

from __future__ import annotations

import html
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence as Seq

import numpy as np
import torch

from ..data import (
    DEFAULT_SEPARATOR,
    Message,
    average_ranks,
    cut_left,
    encode,
    encode_steps,
    join_steps,
    messages_of,
    sigmoid,
    token_texts,
)
from ..plots import save_png

__all__ = [
    "Explained",
    "explain_responses",
    "render_html",
    "render_index",
    "render_png",
    "decisive_share",
    "rank_correlation",
    "colour_of",
    "page_scale",
]

# Diverging colour map: blue (negative) — white (0) — red (positive).
NEGATIVE_RGB = (33, 102, 172)
POSITIVE_RGB = (178, 24, 43)
NEUTRAL_RGB = (255, 255, 255)


# ------------------------------------------------------------------ the record


@dataclass
class Explained:
    """One response explained by one reward model.

    ``tokens[i]`` is the text of response token ``i`` (special tokens such as
    ``<|end|>`` appear as written), ``r[i]`` its prefix reward, ``delta[i]``
    its change ``r[i] - r[i-1]`` (``r[-1]`` being ``baseline``, the reward of
    the prompt alone), ``w[i]`` (optional) the generator probability of the
    token given everything before it, and ``outcome`` the reward ``r[-1]``.
    ``step_ends`` (responses given as steps) are the indices of the tokens
    where each step's score is read; ``step_labels`` the true step labels, if known.
    """

    model: str
    label: str
    tokens: list[str]
    r: list[float]
    delta: list[float]
    baseline: float
    outcome: float
    w: list[float] | None = None
    token_ids: list[int] = field(default_factory=list)
    step_ends: list[int] = field(default_factory=list)
    step_labels: list[int] | None = None

    @property
    def step_scores(self) -> list[float]:
        """The reward at the end of each step (the last one is ``outcome``)."""
        return [self.r[i] for i in self.step_ends]

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------- computing it



@torch.no_grad()
def explain_responses(
    rm,
    prompt: str | list[Message],
    responses: Seq[tuple[str, str | list[str]]],
    model_name: str,
    generator=None,
    max_length: int | None = None,
    separator: str = DEFAULT_SEPARATOR,
) -> list[Explained]:
    """Per-token rewards of each ``(label, response)`` to one prompt.

    A response given as a list of steps is joined with ``separator`` and its
    step boundaries are recorded (``Explained.step_ends``).

    ``generator`` is ``None``, a causal LM sharing the RM's tokenizer (called
    as ``generator(input_ids=..., attention_mask=...).logits``), or ``"self"``
    for the RM backbone's own LM head. ``max_length`` cuts over-long prompts
    from the left, as training does; a response that alone is too long is an
    error.
    """
    tokenizer = rm.tokenizer
    messages = messages_of(prompt)
    device = next(rm.parameters()).device
    was_training = rm.training
    rm.eval()
    if generator is not None and not isinstance(generator, str):
        gen_training = generator.training
        generator.eval()
    out: list[Explained] = []
    try:
        for label, response in responses:
            steps = None if isinstance(response, str) else list(response)
            if steps is None:
                seq = encode(tokenizer, messages, response)
            else:
                seq, response = encode_steps(tokenizer, messages, steps, separator), join_steps(steps, separator)
            cut = 0
            if max_length is not None:
                fitted = cut_left(seq, max_length, label)
                cut = seq.length - fitted.length
                seq = fitted
            if seq.start >= seq.length:
                raise ValueError(f"{label}: the response has no tokens")
            ids = torch.tensor([seq.input_ids], dtype=torch.long, device=device)
            mask = torch.ones_like(ids)
            rewards, hidden, _ = rm(ids, mask)
            rewards = rewards[0].float().cpu()
            baseline = float(rewards[seq.start - 1]) if seq.start > 0 else 0.0
            r = rewards[seq.start :].tolist()
            delta = np.diff(np.asarray([baseline] + r, dtype=np.float64)).tolist()
            w = None
            if generator is not None:
                w = _generator_probs(rm, generator, ids, mask, hidden, seq.start)
            out.append(
                Explained(
                    model=model_name,
                    label=str(label),
                    tokens=token_texts(tokenizer, messages, response, seq, cut),
                    r=[float(x) for x in r],
                    delta=[float(x) for x in delta],
                    baseline=baseline,
                    outcome=float(r[-1]),
                    w=w,
                    token_ids=list(seq.input_ids[seq.start :]),
                    step_ends=[end - seq.start for end in seq.step_ends],
                )
            )
    finally:
        rm.train(was_training)
        if generator is not None and not isinstance(generator, str):
            generator.train(gen_training)
    return out


def _generator_probs(rm, generator, ids: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor, start: int) -> list[float]:
    """``p_gen(tok_t | tok_<t)`` for every response token ``t >= start``."""
    if isinstance(generator, str):
        if generator != "self":
            raise ValueError(f"unknown generator {generator!r} (pass a causal LM or 'self')")
        if rm.lm_head is None:
            raise ValueError("generator 'self' needs the reward model's LM head, and this model has none")
        logits = rm.lm_head(hidden.to(rm.lm_head.weight.dtype))
    else:
        gen_device = next(generator.parameters()).device
        logits = generator(input_ids=ids.to(gen_device), attention_mask=mask.to(gen_device), use_cache=False).logits
    if logits.shape[-1] <= int(ids.max()):
        raise ValueError(
            f"the generator's vocabulary ({logits.shape[-1]} tokens) does not cover the reward model's token ids"
        )
    from ..modeling import token_logprobs

    probs = token_logprobs(logits[0, :-1], ids[0, 1:].to(logits.device)).exp().cpu()
    # probs[j] = p(tok_{j+1} | tok_<=j); token t uses probs[t-1].
    if start == 0:
        return [float("nan")] + probs.tolist()
    return probs[start - 1 :].tolist()


# ----------------------------------------------------------------- colouring


def page_scale(rows: Seq[Seq[Explained]]) -> float:
    """The symmetric colour scale: the largest ``|Δr|`` on the page (1 if none)."""
    values = [abs(d) for row in rows for ex in row for d in ex.delta if math.isfinite(d)]
    scale = max(values, default=0.0)
    return scale if scale > 0 else 1.0


def colour_of(value: float, scale: float) -> tuple[int, int, int]:
    """Diverging colour of ``value`` on ``[-scale, scale]``: blue < 0, white at 0, red > 0."""
    if not math.isfinite(value) or scale <= 0:
        return NEUTRAL_RGB
    t = max(-1.0, min(1.0, value / scale))
    end = POSITIVE_RGB if t > 0 else NEGATIVE_RGB
    a = abs(t)
    return tuple(round(n + (e - n) * a) for n, e in zip(NEUTRAL_RGB, end))  # type: ignore[return-value]


def _css_rgb(rgb: tuple[int, int, int]) -> str:
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def _text_colour(value: float, scale: float) -> str:
    return "#fff" if math.isfinite(value) and abs(value) / scale > 0.6 else "#111"


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.4f}"


def _prompt_text(prompt: str | list[Message]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in prompt)


# --------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:20px;color:#111;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .5em}
h2{font-size:1.05em;margin:.2em 0 .5em}
.prompt{white-space:pre-wrap;background:#f0f0f0;border:1px solid #ddd;border-radius:4px;padding:8px;
 font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;max-height:14em;overflow:auto}
.legend{display:flex;flex-wrap:wrap;align-items:center;gap:8px;margin:12px 0;font-size:13px}
.legend .lab,.legend .min,.legend .max{white-space:nowrap}
.bar{width:260px;height:14px;border:1px solid #999;
 background:linear-gradient(to right,rgb(33,102,172),rgb(255,255,255),rgb(178,24,43))}
.model{border:1px solid #ccc;border-radius:6px;background:#fff;padding:10px;margin:14px 0}
.responses{display:flex;gap:12px;align-items:flex-start}
.response{flex:1 1 0;min-width:0;border:1px solid #e2e2e2;border-radius:4px;padding:8px}
.meta{font-size:12px;color:#333;margin-bottom:6px}
.meta b{font-size:13px}
.tokens{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;
 font-size:13px;line-height:1.7}
.t{border-radius:2px;cursor:default}
.t:hover{outline:2px solid #000}
.t.empty{display:inline-block;min-width:3px;height:1em;vertical-align:middle}
.nl{color:#888;font-size:11px}
.step{font-size:11px;background:#eee;color:#222;border:1px solid #999;border-radius:3px;padding:0 3px;margin:0 3px}
.step.wrong{border-color:#b2182b;background:#fbe3e6}
.top{font-size:12px;color:#444;margin-top:6px}
.verdict{font-size:13px;margin:4px 0 8px}
#info{position:fixed;right:12px;bottom:12px;background:#222;color:#eee;font:12px ui-monospace,monospace;
 padding:6px 9px;border-radius:4px;white-space:pre;display:none;max-width:60vw;z-index:10}
"""

_JS = """
(function(){
  var info=document.getElementById('info');
  document.addEventListener('mouseover',function(e){
    var t=e.target.closest?e.target.closest('.t'):null;
    if(!t){info.style.display='none';return;}
    var resp=t.closest('.response');
    info.textContent=(resp?resp.getAttribute('data-head')+'\\n':'')+
      'token #'+t.getAttribute('data-i')+'  '+JSON.stringify(t.getAttribute('data-text'))+'\\n'+
      'r = '+t.getAttribute('data-r')+'   \\u0394r = '+t.getAttribute('data-d')+'   w = '+t.getAttribute('data-w');
    info.style.display='block';
  });
})();
"""


def _token_span(ex: Explained, i: int, scale: float) -> str:
    text = ex.tokens[i]
    d = ex.delta[i]
    w = ex.w[i] if ex.w is not None and i < len(ex.w) else None
    r_s, d_s, w_s = _fmt(ex.r[i]), _fmt(d), ("n/a" if w is None or not math.isfinite(w) else f"{w:.4f}")
    title = f"r={r_s}  Δr={d_s}  w={w_s}"
    if ex.token_ids:
        title += f"  id={ex.token_ids[i]}"
    style = f"background:{_css_rgb(colour_of(d, scale))};color:{_text_colour(d, scale)}"
    cls = "t" if text else "t empty"
    # Newlines stay real newlines (the container is pre-wrap); a faint ↵ marks them.
    body = html.escape(text).replace("\n", '<span class="nl">↵</span>\n')
    return (
        f'<span class="{cls}" style="{style}" title="{html.escape(title)}" data-i="{i}" '
        f'data-r="{r_s}" data-d="{d_s}" data-w="{w_s}" data-text="{html.escape(text)}">{body}</span>'
    )


def _top_changes(ex: Explained, k: int = 5) -> str:
    order = sorted(range(len(ex.delta)), key=lambda i: -abs(ex.delta[i]) if math.isfinite(ex.delta[i]) else 0)[:k]
    parts = [f"{html.escape(repr(ex.tokens[i]))} {_fmt(ex.delta[i])}" for i in order]
    return "largest |Δr|: " + ", ".join(parts)


def _step_text(ex: Explained, k: int) -> str:
    """The marker after step ``k``: its number, σ(r) at its end and, if known, its true label."""
    mark = "" if ex.step_labels is None else (" ✓" if ex.step_labels[k] else " ✗")
    return f"step {k + 1}: σ(r)={sigmoid(ex.step_scores[k]):.2f}{mark}"


def _step_marker(ex: Explained, k: int) -> str:
    wrong = ex.step_labels is not None and not ex.step_labels[k]
    title = f"step {k + 1}: r = {ex.step_scores[k]:+.4f}"
    return f'<span class="step{" wrong" if wrong else ""}" title="{html.escape(title)}">{html.escape(_step_text(ex, k))}</span>'


def _response_block(ex: Explained, scale: float) -> str:
    head = f"{ex.model} — {ex.label}: R = {ex.outcome:+.4f}"
    ends = {i: k for k, i in enumerate(ex.step_ends)}
    spans = "".join(
        _token_span(ex, i, scale) + (_step_marker(ex, ends[i]) if i in ends else "") for i in range(len(ex.tokens))
    )
    meta = (
        f"<b>{html.escape(ex.label)}</b> &nbsp; R = {ex.outcome:+.4f} &nbsp; "
        f"prompt-only r = {ex.baseline:+.4f} &nbsp; ΣΔr = {ex.outcome - ex.baseline:+.4f} &nbsp; "
        f"{len(ex.tokens)} tokens"
        + (f" &nbsp; {len(ex.step_ends)} steps" if ex.step_ends else "")
    )
    return (
        f'<div class="response" data-head="{html.escape(head)}" data-label="{html.escape(ex.label)}" '
        f'data-outcome="{ex.outcome:.6g}">'
        f'<div class="meta">{meta}</div><div class="tokens">{spans}</div>'
        f'<div class="top">{_top_changes(ex)}</div></div>'
    )


def _verdict(row: Seq[Explained]) -> str:
    by_label = {ex.label: ex for ex in row}
    if "chosen" in by_label and "rejected" in by_label:
        margin = by_label["chosen"].outcome - by_label["rejected"].outcome
        ok = "prefers chosen ✓" if margin > 0 else ("tie" if margin == 0 else "prefers rejected ✗")
        return f'<div class="verdict">R(chosen) − R(rejected) = {margin:+.4f} ({ok})</div>'
    return ""


def render_html(title: str, prompt_text: str | list[Message], rows: Seq[Seq[Explained]]) -> str:
    """A self-contained page: one row per model, that model's responses side by side.

    Tokens are coloured by ``Δr`` on one symmetric scale for the whole page
    (the largest ``|Δr|``), so rows are comparable; hovering a token shows
    ``r_t``, ``Δr_t`` and ``w_t``.
    """
    scale = page_scale(rows)
    blocks = []
    for row in rows:
        if not row:
            continue
        name = html.escape(row[0].model)
        responses = "".join(_response_block(ex, scale) for ex in row)
        blocks.append(
            f'<section class="model" data-model="{name}"><h2>{name}</h2>{_verdict(row)}'
            f'<div class="responses">{responses}</div></section>'
        )
    has_w = any(ex.w is not None for row in rows for ex in row)
    legend = (
        '<div class="legend"><span class="lab">Δr<sub>t</sub> = r<sub>t</sub> − r<sub>t−1</sub>:</span>'
        f'<span class="min">{-scale:+.4g}</span><span class="bar" title="blue: reward falls, red: reward rises">'
        f'</span><span class="max">{scale:+.4g}</span>'
        "<span>&nbsp;(white = 0; r<sub>s−1</sub> is the prompt-only reward; hover a token for r, Δr"
        + (", w = p<sub>gen</sub>(token | prefix)" if has_w else "")
        + ")</span></div>"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<div class="prompt">{html.escape(_prompt_text(prompt_text))}</div>'
        f"{legend}{''.join(blocks)}<div id=\"info\"></div><script>{_JS}</script></body></html>\n"
    )


def render_index(entries: Seq[tuple[str, str]], title: str = "icrm explain") -> str:
    """A page of links: ``entries`` are ``(href, text)``, hrefs relative to the index."""
    items = "".join(f'<li><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></li>' for href, text in entries)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>body{{font-family:system-ui,sans-serif;margin:20px}}"
        "li{margin:3px 0}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(entries)} examples</p><ol>{items}</ol></body></html>\n"
    )


# ---------------------------------------------------------------------- PNG


def _png_text(text: str) -> str:
    return text.replace("\t", "    ").replace("\r", "")


def _display_items(ex: Explained, max_tokens: int) -> list[tuple[str, int, int | None]]:
    """What a PNG row shows: ``(text, token index, step)``; a step marker follows each step's last token."""
    ends = {i: k for k, i in enumerate(ex.step_ends)}
    items: list[tuple[str, int, int | None]] = []
    for i, text in enumerate(ex.tokens[:max_tokens]):
        items.append((text, i, None))
        if i in ends:
            k = ends[i]
            mark = "" if ex.step_labels is None else (" ✓" if ex.step_labels[k] else " ✗")
            items.append((f"[{k + 1}: {sigmoid(ex.step_scores[k]):.2f}{mark}]", i, k))
    return items


def _cells(token: str) -> list[str]:
    """What a token shows in the PNG, one string per line it occupies (a newline shows as ↵ and ends a line)."""
    parts = _png_text(token).split("\n")
    shown = [part + "↵" for part in parts[:-1]] + [parts[-1]]
    if shown == [""]:
        return ["·"]  # a byte fragment of a character: keep a visible cell
    return shown


def _words(tokens: Seq[str], whole: Seq[bool] = ()) -> list[list[int]]:
    """Token indices grouped into words.

    A word starts at a token that begins with white space or follows a
    newline; a token flagged in ``whole`` (a step marker) is a word of its own.
    """
    words: list[list[int]] = []
    for i, token in enumerate(tokens):
        marker = i < len(whole) and whole[i]
        after_marker = 0 < i <= len(whole) and whole[i - 1]
        if not words or marker or after_marker or token[:1].isspace() or "\n" in tokens[i - 1]:
            words.append([])
        words[-1].append(i)
    return words


def _layout(tokens: Seq[str], width: int, whole: Seq[bool] = ()) -> list[tuple[int, int, str, int]]:
    """Wrap tokens into lines of ``width`` character cells: ``(line, col, text, index)``.

    Lines break between words, as in a text editor: a word that does not fit
    on the rest of a line starts the next one (without the space before it),
    and only a word longer than a whole line is cut, where the line ends. A
    token flagged in ``whole`` (a step marker) is a word of its own.
    """
    cells = [_cells(token) for token in tokens]
    placed, line, col = [], 0, 0
    for word in _words(tokens, whole):
        first_line = 0  # the word's width up to its first line break
        for i in word:
            first_line += len(cells[i][0])
            if len(cells[i]) > 1:
                break
        if col > 0 and col + first_line > width:
            line, col = line + 1, 0
            if cells[word[0]][0][:1] == " " and len(cells[word[0]][0]) > 1:
                cells[word[0]][0] = cells[word[0]][0][1:]  # the space the line break replaces
        for i in word:
            for j, shown in enumerate(cells[i]):
                if j > 0:
                    line, col = line + 1, 0
                while shown:
                    if col >= width:
                        line, col = line + 1, 0
                    piece, shown = shown[: width - col], shown[width - col :]
                    placed.append((line, col, piece, i))
                    col += len(piece)
    return placed


def render_png(
    rows: Seq[Seq[Explained]], path: str | Path, width: int = 56, max_tokens: int = 800, row_scales: bool = False
) -> Path:
    """The same heatmap as a PNG (token boxes coloured by ``Δr``), written atomically.

    One colour scale for the page keeps rows comparable; ``row_scales`` gives
    each row (model) its own, for models whose ``|Δr|`` differ by orders of
    magnitude, where the smaller ones would otherwise look blank. Each row
    then names its scale and the colour bar reads ``Δr`` over it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    rows = [list(row) for row in rows if row]
    if not rows:
        raise ValueError("nothing to render")
    scales = [page_scale([row]) for row in rows] if row_scales else [page_scale(rows)] * len(rows)
    ncols = max(len(row) for row in rows)
    items = [[_display_items(ex, max_tokens) for ex in row] for row in rows]
    layouts = [[_layout([t for t, _, _ in shown], width, [k is not None for _, _, k in shown]) for shown in row]
               for row in items]
    lines = [max((max((p[0] for p in lay), default=0) + 1 for lay in row), default=1) for row in layouts]
    head = 3  # lines of header per row (model name, response labels)
    char_w, line_h = 0.085, 0.2  # inches per character cell / per line
    fig_w = max(6.0, ncols * (width * char_w + 0.4) + 0.6)
    total_lines = sum(n + head for n in lines) + len(lines) - 1  # a blank line between rows
    bottom, top = (0.85 if row_scales else 0.7), 0.1  # inches: the colour bar and its title below the rows, a margin above
    fig_h = total_lines * line_h + bottom + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, bottom / fig_h, 0.96, total_lines * line_h / fig_h))
    col_w = width + 4
    ax.set_xlim(0, ncols * col_w)
    ax.set_ylim(total_lines, 0)
    ax.axis("off")
    fontsize = 8
    cell_pt = 0.96 * fig_w / (ncols * col_w) * 72  # a character cell's width in points
    token_font = cell_pt / 0.6  # DejaVu Sans Mono advances 0.6 em: one character per cell
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs in the monospace font
        y0 = 0
        for row, row_layout, row_items, n, scale in zip(rows, layouts, items, lines, scales):
            title = row[0].model + (f"  (colour scale ±{scale:.3g})" if row_scales else "")
            ax.text(0, y0 + 0.8, title, fontsize=fontsize + 3, fontweight="bold", va="center", parse_math=False)
            for c, (ex, lay, shown) in enumerate(zip(row, row_layout, row_items)):
                x0 = c * col_w
                note = f"{ex.label}: R = {ex.outcome:+.3f}"
                if len(ex.tokens) > max_tokens:
                    note += f" (first {max_tokens} of {len(ex.tokens)} tokens)"
                ax.text(x0, y0 + 2.0, note, fontsize=fontsize + 1, va="center", parse_math=False)
                for line, col, piece, j in lay:
                    y = y0 + head + line
                    _, i, step = shown[j]
                    if step is not None:
                        wrong = ex.step_labels is not None and not ex.step_labels[step]
                        ax.add_patch(Rectangle((x0 + col, y), len(piece), 0.92, facecolor="#eeeeee",
                                               edgecolor="#b2182b" if wrong else "#888888", linewidth=0.8))
                        ax.text(x0 + col, y + 0.48, piece, fontsize=token_font, family="monospace", va="center",
                                ha="left", color="#222222", parse_math=False)
                        continue
                    rgb = colour_of(ex.delta[i], scale)
                    ax.add_patch(
                        Rectangle((x0 + col, y), len(piece), 0.92, facecolor=[v / 255 for v in rgb], edgecolor="none")
                    )
                    ax.text(
                        x0 + col,
                        y + 0.48,
                        piece,
                        fontsize=token_font,
                        family="monospace",
                        va="center",
                        ha="left",
                        color=_text_colour(ex.delta[i], scale),
                        parse_math=False,
                    )
            y0 += n + head + 1
        cmap = LinearSegmentedColormap.from_list(
            "icrm_div", [[v / 255 for v in NEGATIVE_RGB], [1, 1, 1], [v / 255 for v in POSITIVE_RGB]]
        )
        bar = fig.add_axes((0.3, 0.18 / fig_h, 0.4, 0.12 / fig_h))
        bar_scale = 1.0 if row_scales else scales[0]
        fig.colorbar(ScalarMappable(Normalize(-bar_scale, bar_scale), cmap), cax=bar, orientation="horizontal")
        bar.xaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=True))  # labels that never touch
        steps_note = "; [k: σ(r)] = step k's score, ✓/✗ its label" if any(ex.step_ends for row in rows for ex in row) else ""
        shown = "Δr ÷ the colour scale beside its model's name (each model has its own)\n" if row_scales else ""
        bar.set_title(shown + "Δr = r_t − r_{t−1}" + steps_note, fontsize=8)
        bar.tick_params(labelsize=7)
    return save_png(fig, path, tight=False)


# ------------------------------------------------------- attribution metrics


def decisive_share(delta: Seq[float], decisive: Seq[bool]) -> float:
    """Share of the total ``|Δr|`` that falls on decisive tokens (NaN if all ``Δr`` are 0)."""
    if len(delta) != len(decisive):
        raise ValueError(f"{len(delta)} deltas but {len(decisive)} decisive flags")
    mag = np.abs(np.asarray(delta, dtype=np.float64))
    total = mag.sum()
    if total == 0:
        return float("nan")
    return float(mag[np.asarray(decisive, dtype=bool)].sum() / total)


def rank_correlation(delta: Seq[float], true_delta: Seq[float]) -> float:
    """Spearman correlation (ties get average ranks); NaN when undefined."""
    if len(delta) != len(true_delta):
        raise ValueError(f"{len(delta)} deltas but {len(true_delta)} reference values")
    a, b = np.asarray(delta, dtype=np.float64), np.asarray(true_delta, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    if denom == 0:
        return float("nan")
    return float((ra * rb).sum() / denom)


# ------------------------------------------------------------------ pages from the CLI


def _labelled_responses(example, per_step: bool, separator: str) -> list[tuple[str, str | list[str]]]:
    from ..data import BonExample, PairExample, StepExample, responses_of, split_steps

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
    ``icrm score`` (:func:`icrm.scoring.fit_examples`); the default limit is
    the smallest of the models' defaults. An existing page, or a folder that is
    not an earlier ``explain`` output, is replaced only with ``overwrite``
    (:func:`icrm.outputs.check_output`).
    """
    from ..data import StepExample, load_examples, split_steps
    from ..errors import UserError
    from ..modeling import RewardModel, fit_examples, load_generator, resolve_max_length
    from ..outputs import check_output, staged_directory, staged_file

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
