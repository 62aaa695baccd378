"""The heatmap as a PNG: token boxes coloured by ``Δr``, wrapped into lines as a text editor would.

The same rows as the HTML page, drawn with matplotlib on an Agg canvas
(one character cell per monospace character) and written atomically.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence as Seq

from ..evaluation import sigmoid
from ..plots import save_png
from .colours import NEGATIVE_RGB, POSITIVE_RGB, colour_of, page_scale, text_colour
from .record import Explained


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
            items.append((f"[{k + 1}: {sigmoid(ex.step_scores[k]):.2f}{ex.step_mark(k)}]", i, k))
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
                        color=text_colour(ex.delta[i], scale),
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
