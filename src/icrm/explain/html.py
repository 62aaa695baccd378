"""The heatmap as a self-contained HTML page, and an index page linking to such pages.

Inline CSS and JS only, every text escaped: one row per model, so models
(e.g. BT and ICRM) can be compared on the same responses, the responses of a
row side by side; hovering a token shows ``r_t``, ``Δr_t`` and ``w_t``. Step
boundaries show each step's score ``σ(r)`` (and ✓/✗ when its label is known).
"""

from __future__ import annotations

import html
import math
from typing import Sequence as Seq

from ..data import Message
from ..evaluation import sigmoid
from .colours import colour_of, page_scale, text_colour
from .record import Explained


def _css_rgb(rgb: tuple[int, int, int]) -> str:
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.4f}"


def _prompt_text(prompt: str | list[Message]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in prompt)


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
    style = f"background:{_css_rgb(colour_of(d, scale))};color:{text_colour(d, scale)}"
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
    return f"step {k + 1}: σ(r)={sigmoid(ex.step_scores[k]):.2f}{ex.step_mark(k)}"


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
