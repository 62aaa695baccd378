"""Per-token reward heatmaps (icrm.explain): numbers, HTML, PNG, browser, metrics."""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from icrm.data import encode
from icrm.explain import (
    Explained,
    colour_of,
    decisive_share,
    explain_responses,
    rank_correlation,
    render_html,
    render_index,
    render_png,
)
from icrm.modeling import RewardModel, build_causal_lm, train_tokenizer

PROMPT = "What is the capital of France?"
CHOSEN = "The capital of France is Paris.\nIt lies on the Seine."
REJECTED = "I think it is <script>alert('x')</script> & Lyon, maybe."
TEXTS = [PROMPT, CHOSEN, REJECTED, "some text about cities, rivers and countries"]


@pytest.fixture(scope="module")
def models():
    tokenizer = train_tokenizer(TEXTS * 20, 300)
    lm = build_causal_lm("tiny", tokenizer, seed=0)
    rm = RewardModel.from_causal_lm(lm, tokenizer)
    other = RewardModel.from_causal_lm(build_causal_lm("tiny", tokenizer, seed=1), tokenizer)
    return rm, other, lm


@pytest.fixture(scope="module")
def pair(models):
    rm = models[0]
    return explain_responses(rm, PROMPT, [("chosen", CHOSEN), ("rejected", REJECTED)], "BT")


# ------------------------------------------------------------------ numbers


def test_outcome_matches_score(models, pair):
    rm = models[0]
    expected = rm.score([PROMPT, PROMPT], [CHOSEN, REJECTED])
    for ex, want in zip(pair, expected):
        assert ex.r[-1] == pytest.approx(want, abs=1e-5)
        assert ex.outcome == pytest.approx(want, abs=1e-5)
        token_rewards = rm.token_rewards(PROMPT, CHOSEN if ex.label == "chosen" else REJECTED)
        np.testing.assert_allclose(ex.r, token_rewards.numpy(), atol=1e-5)
    assert [ex.label for ex in pair] == ["chosen", "rejected"]
    assert all(ex.model == "BT" for ex in pair)


def test_deltas_telescope_from_prompt_only_reward(models, pair):
    rm = models[0]
    for ex in pair:
        assert len(ex.tokens) == len(ex.r) == len(ex.delta) == len(ex.token_ids)
        assert ex.delta[0] == pytest.approx(ex.r[0] - ex.baseline, abs=1e-6)
        for t in range(1, len(ex.r)):
            assert ex.delta[t] == pytest.approx(ex.r[t] - ex.r[t - 1], abs=1e-6)
        assert sum(ex.delta) == pytest.approx(ex.r[-1] - ex.baseline, abs=1e-5)
    # the baseline is the reward of the prompt alone (the prefix before the response)
    seq = encode(rm.tokenizer, [{"role": "user", "content": PROMPT}], CHOSEN)
    prefix = torch.tensor([seq.input_ids[: seq.start]])
    with torch.no_grad():
        rewards = rm(prefix, torch.ones_like(prefix)).rewards
    assert pair[0].baseline == pytest.approx(float(rewards[0, -1]), abs=1e-5)
    assert pair[0].baseline == pytest.approx(pair[1].baseline, abs=1e-5)


def test_token_texts_are_readable_and_complete(models, pair):
    chosen, rejected = pair
    assert "".join(chosen.tokens) == CHOSEN + "<|end|>"
    assert "".join(rejected.tokens) == REJECTED + "<|end|>"
    assert chosen.tokens[-1] == "<|end|>"
    assert "\n" in "".join(chosen.tokens)
    # byte-level BPE: characters outside the training text still come back as text
    rm = models[0]
    odd = "naïve café 😀 ñ\ttab"
    (ex,) = explain_responses(rm, PROMPT, [("response", odd)], "BT")
    assert "".join(ex.tokens) == odd + "<|end|>"
    assert len(ex.tokens) == len(ex.r)


def test_generator_probabilities(models):
    rm, _, lm = models
    (ex,) = explain_responses(rm, PROMPT, [("chosen", CHOSEN)], "ICRM", generator=lm)
    assert ex.w is not None and len(ex.w) == len(ex.tokens)
    assert all(0.0 < w <= 1.0 for w in ex.w)
    seq = encode(rm.tokenizer, [{"role": "user", "content": PROMPT}], CHOSEN)
    ids = torch.tensor([seq.input_ids])
    with torch.no_grad():
        probs = torch.softmax(lm(input_ids=ids).logits[0].float(), dim=-1)
    for i in (0, 3, len(ex.w) - 1):
        t = seq.start + i
        assert ex.w[i] == pytest.approx(float(probs[t - 1, seq.input_ids[t]]), rel=1e-4)
    # the RM here was built on `lm`, so its own LM head gives the same numbers
    (same,) = explain_responses(rm, PROMPT, [("chosen", CHOSEN)], "ICRM", generator="self")
    np.testing.assert_allclose(same.w, ex.w, rtol=1e-4)
    with pytest.raises(ValueError):
        explain_responses(rm, PROMPT, [("chosen", CHOSEN)], "ICRM", generator="uniformish")


def test_max_length_cuts_the_prompt_only(models):
    rm = models[0]
    (full,) = explain_responses(rm, PROMPT, [("chosen", CHOSEN)], "BT")
    n = len(full.tokens)
    (cut,) = explain_responses(rm, PROMPT, [("chosen", CHOSEN)], "BT", max_length=n + 3)
    assert cut.tokens == full.tokens
    with pytest.raises(ValueError):
        explain_responses(rm, PROMPT, [("chosen", CHOSEN)], "BT", max_length=n - 1)


def test_chat_message_prompts(models):
    rm = models[0]
    messages = [{"role": "user", "content": PROMPT}]
    a = explain_responses(rm, messages, [("response", CHOSEN)], "BT")[0]
    b = explain_responses(rm, PROMPT, [("response", CHOSEN)], "BT")[0]
    assert a.r == pytest.approx(b.r, abs=1e-6)


# --------------------------------------------------------------------- HTML


def _token_texts_in(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'data-text="([^"]*)"', page)]


def test_html_page(pair):
    page = render_html("Example 1", PROMPT, [pair])
    assert page.startswith("<!DOCTYPE html>")
    # every token appears, as a span and as visible (escaped) text
    assert _token_texts_in(page) == pair[0].tokens + pair[1].tokens
    body = re.sub(r'<span class="nl">↵</span>', "", page)
    for tok in pair[0].tokens + pair[1].tokens:
        assert html.escape(tok) in body
    # numbers: outcome rewards and per-token r, Δr
    for ex in pair:
        assert f"{ex.outcome:+.4f}" in page
        assert f'data-r="{ex.r[0]:+.4f}"' in page
        assert f'data-d="{ex.delta[-1]:+.4f}"' in page
        assert f"r={ex.r[0]:+.4f}" in page  # title attribute for hover
    # legend: a colour bar with the symmetric min / max
    scale = max(abs(d) for ex in pair for d in ex.delta)
    assert 'class="legend"' in page and 'class="bar"' in page
    assert f'<span class="min">{-scale:+.4g}</span>' in page
    assert f'<span class="max">{scale:+.4g}</span>' in page
    # chosen vs rejected verdict
    assert "R(chosen) − R(rejected)" in page
    # self-contained: nothing loaded from elsewhere
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    # escaping: the response's <script> is text, the page has only its own script
    assert "<script>alert" not in page and "</script> &" not in page
    assert "&lt;" in page and "&#x27;" in page
    assert "<script>alert('x')</script>" in "".join(_token_texts_in(page))
    assert page.count("<script") == 1
    assert html.escape(PROMPT) in page


def test_html_colours_follow_sign(pair):
    page = render_html("Example", PROMPT, [pair])
    scale = max(abs(d) for ex in pair for d in ex.delta)
    for ex in pair:
        for d in ex.delta:
            rgb = colour_of(d, scale)
            assert f"background:rgb({rgb[0]},{rgb[1]},{rgb[2]})" in page
    assert colour_of(0.0, 2.0) == (255, 255, 255)
    r, g, b = colour_of(2.0, 2.0)
    assert r > b and (r, g, b) != (255, 255, 255)
    r, g, b = colour_of(-2.0, 2.0)
    assert b > r
    assert colour_of(-5.0, 2.0) == colour_of(-2.0, 2.0)  # clipped to the scale
    assert colour_of(float("nan"), 1.0) == (255, 255, 255)


def test_html_several_models_give_several_rows(models, pair):
    other = explain_responses(models[1], PROMPT, [("chosen", CHOSEN), ("rejected", REJECTED)], "ICRM <v2>")
    page = render_html("BT vs ICRM", [{"role": "user", "content": PROMPT}], [pair, other])
    assert page.count('<section class="model"') == 2
    assert page.index(">BT</h2>") < page.index(">ICRM &lt;v2&gt;</h2>")
    assert page.count('class="response"') == 4
    assert "ICRM <v2>" not in page
    assert "[user] " + html.escape(PROMPT) in page


def test_html_handles_generator_weights_and_special_text(models):
    rm, _, lm = models
    tricky = 'quotes " and \' and & and </span></div> and\n\nblank lines'
    rows = [explain_responses(rm, 'prompt with "quotes" & <b>tags</b>', [("response", tricky)], 'M "1"', generator=lm)]
    page = render_html('Title <i>"x"</i>', 'prompt with "quotes" & <b>tags</b>', rows)
    assert "</span></div> and" not in page
    assert "<b>tags</b>" not in page and "<i>" not in page
    assert _token_texts_in(page) == rows[0][0].tokens
    assert f'data-w="{rows[0][0].w[0]:.4f}"' in page
    assert "p<sub>gen</sub>" in page


def test_index_page():
    page = render_index([("ex-0001.html", "example 1: <b>hi</b>"), ("ex-0002.html", "example 2")])
    assert page.count("<li>") == 2
    assert 'href="ex-0001.html"' in page and 'href="ex-0002.html"' in page
    assert "<b>hi</b>" not in page and "&lt;b&gt;hi&lt;/b&gt;" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?:", page, re.I)


# ---------------------------------------------------------------------- PNG


def test_png(tmp_path, models, pair):
    import matplotlib.image as mpimg

    other = explain_responses(models[1], PROMPT, [("chosen", CHOSEN), ("rejected", REJECTED)], "ICRM")
    out = render_png([pair, other], tmp_path / "sub" / "heatmap.png")
    assert out == tmp_path / "sub" / "heatmap.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in out.parent.iterdir()) == ["heatmap.png"]  # no temp file left
    image = mpimg.imread(out)
    rgb = image[..., :3].reshape(-1, 3)
    assert (rgb < 0.95).any(axis=1).mean() > 0.01  # something drawn
    assert len(np.unique((rgb * 255).round().astype(int), axis=0)) > 10  # coloured boxes, text
    # a PNG of a single long response with odd characters works too
    long = explain_responses(models[0], PROMPT, [("response", (CHOSEN + " ñ😀\t") * 12)], "BT")
    assert render_png([long], tmp_path / "long.png", max_tokens=100).stat().st_size > 0


# ------------------------------------------------------------------ browser


def _chromium() -> str | None:
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(name).exists():
            return name
    return shutil.which("chromium")


def test_page_renders_in_a_browser(tmp_path, models, pair):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed; .ci/run installs it with apt-get")
    other = explain_responses(models[1], PROMPT, [("chosen", CHOSEN), ("rejected", REJECTED)], "ICRM")
    page_file = tmp_path / "page.html"
    page_file.write_text(render_html("Browser check", PROMPT, [pair, other]), encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1000,800",
        page_file.as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 0, f"no screenshot (rc={result.returncode}): {result.stderr[-2000:]}"

    import matplotlib.image as mpimg

    image = mpimg.imread(shot)[..., :3]
    pixels = (image * 255).round().astype(int).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50, "screenshot is blank"
    non_white = (pixels < 235).any(axis=1).mean()
    assert non_white > 0.02, f"screenshot nearly blank ({non_white:.3%} non-white pixels)"
    # the diverging colours of the token spans show up (strongly red or strongly blue)
    reddish = ((pixels[:, 0] - pixels[:, 2]) > 60).sum()
    bluish = ((pixels[:, 2] - pixels[:, 0]) > 60).sum()
    assert reddish + bluish > 100, "no coloured token boxes in the screenshot"


# ------------------------------------------------------------------ metrics


def test_decisive_share():
    assert decisive_share([1.0, -3.0, 0.0, 0.5], [False, True, False, True]) == pytest.approx(3.5 / 4.5)
    assert decisive_share([0.2, 0.2], [True, True]) == pytest.approx(1.0)
    assert decisive_share([0.2, -0.2], [False, False]) == 0.0
    assert math.isnan(decisive_share([0.0, 0.0], [True, False]))
    with pytest.raises(ValueError):
        decisive_share([1.0], [True, False])


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([0.1, 5.0, 0.2], [1, 100, 2]) == pytest.approx(1.0)  # monotone, not linear
    # ties get average ranks: [1, 2.5, 2.5, 4] vs [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5)
    assert rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    # [3,1,2] vs [1,2,3]: ranks centred [1,-1,0] and [-1,0,1] -> -1 / 2
    assert rank_correlation([3, 1, 2], [1, 2, 3]) == pytest.approx(-0.5)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))
    assert math.isnan(rank_correlation([1], [1]))
    with pytest.raises(ValueError):
        rank_correlation([1, 2], [1, 2, 3])


def test_explained_to_dict(pair):
    data = pair[0].to_dict()
    assert data["label"] == "chosen" and data["tokens"] == pair[0].tokens
    assert Explained(**data) == pair[0]


def test_png_lines_break_between_words():
    from icrm.explain.png import _layout

    tokens = ["The", " capital", " of", " Fr", "ance", " is", " Paris", ".\n", "It", " is", " a", "verylongwordthatdoesnotfit"]
    placed = _layout(tokens, 12)
    lines: dict[int, str] = {}
    for line, col, text, _ in placed:
        assert col == len(lines.get(line, ""))  # cells are contiguous
        lines[line] = lines.get(line, "") + text
    assert list(lines.values()) == ["The capital", "of France is", "Paris.↵", "It is", "averylongwor", "dthatdoesnot", "fit"]
    assert {i for _, _, _, i in placed} == set(range(len(tokens)))  # every token drawn


def test_png_row_scales_colour_a_quiet_model_on_its_own_scale(tmp_path):
    """A PRM's |Δr| ~10 beside outcome RMs' ~0.1: on one page scale the quiet rows look blank."""
    import matplotlib.image as mpimg

    def row(model: str, size: float) -> list[Explained]:
        delta = [size, -size, size / 2, -size, size, -size / 2]
        r = np.cumsum(delta).tolist()
        return [Explained(model, "chain", ["one", " two", " three", " four", " five", "<|end|>"], r, delta, 0.0, r[-1])]

    rows = [row("PRM", 10.0), row("BT", 0.1)]

    def strong(path) -> int:  # pixels in a strongly coloured box (red or blue); the figures share one dpi
        rgb = mpimg.imread(path)[..., :3]
        return int((np.abs(rgb[..., 0] - rgb[..., 2]) > 0.4).sum())

    shared, own = render_png(rows, tmp_path / "shared.png"), render_png(rows, tmp_path / "own.png", row_scales=True)
    only_prm = render_png(rows[:1], tmp_path / "prm.png", row_scales=True)
    assert strong(shared) < 1.3 * strong(only_prm)  # BT's row adds next to no colour on the shared scale
    assert strong(own) > 1.6 * strong(shared)  # on its own scale it is as coloured as the PRM's
