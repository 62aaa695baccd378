"""``report.md``: what this run's numbers say, one section per stage, each a function of the metrics.

The sections read only ``metrics.json``'s entries, so a report can be checked from numbers alone
(no training), and each says in words what its numbers show in this run.
"""

from __future__ import annotations

from ...data import BAD_WORDS, GOOD_WORDS, LENGTH_GAP, SUFFIX
from ...evaluation import first_error, predicted_first_error, sigmoid
from .settings import SHORTCUT_SPLITS, STEP_METHODS, STEP_METRICS


def figure(alt: str, file: str) -> list[str]:
    """A figure of the report: its markdown image between blank lines."""
    return ["", f"![{alt}]({file})", ""]


def render_report(metrics: dict, elapsed: float) -> str:
    """``report.md``: the lead, then one section per stage that ran, from the run's metrics."""
    results = metrics["accuracy"]
    splits = sorted({s for per in results.values() for s in per})
    lines = [
        "# icrm demo report",
        "",
        f"Mode: {metrics['mode']}; seed {metrics['settings']['seed']}; {elapsed / 60:.1f} min on this machine "
        f"with {metrics['threads']} torch thread(s)."
        + (" `icrm demo` without `--quick` adds the suffix probe, best-of-N verifiers, a DPO policy loop and "
           "process rewards (BT, ICRM and a PRM scoring every step of a reasoning chain)."
           if metrics["mode"] == "quick" else ""),
        "",
        *lead(metrics),
        "Reward models (tiny Llama, trained from the SFT generator, which learnt the chosen and rejected responses "
        "and also gives the consistency weights).",
        "",
        "## Length shortcut",
        "",
        *accuracy_table(metrics["shortcut"]["accuracy"]),
        "",
        f"ICRM: λ = {metrics['shortcut']['lambda']}. `length/train` is scored against the training labels.",
        *figure("shortcut", "shortcut.png"),
        "## Pairwise accuracy",
        "",
        "`noisy/test` is the main generalization test: clean held-out pairs, while 25% of training labels are "
        "flipped. `noisy/train` is scored against those training labels, flips included: a model that ranks every "
        "pair by the true reward scores 0.75 there, and more means it learnt some flipped labels. The dotted line "
        "in the plot is chance (0.5), what ranking by a coin gets.",
        "",
        *accuracy_table(results),
    ]
    lines += figure("accuracy", "accuracy.png")
    if any(split.startswith("suffix/") for split in splits):
        lines += probe_report(results)
    if metrics["bon"]:
        lines += bon_report(metrics["bon"], metrics.get("bon_agreement"))
    lines += attribution_report(metrics["attribution"])
    if "dpo" in metrics:
        lines += dpo_report(metrics["dpo"])
    if "process" in metrics:
        lines += process_report(metrics["process"])
    lines += loss_report(metrics["losses"])
    lines += [
        "One seed at toy scale: differences of a few points are within seed-to-seed spread. "
        "See BENCHMARKS.md for the multi-seed study.",
        "",
    ]
    return "\n".join(lines)


def lead(metrics: dict) -> list[str]:
    """The report's first section: where BT and ICRM differ in this run and where they tie, from its numbers."""
    shortcut, mode = metrics["shortcut"], metrics["mode"]
    bt, icrm = (shortcut["accuracy"][m] for m in ("BT", "ICRM"))
    task = shortcut["task"]
    gaps = {split: icrm[f"{task}/{split}"] - bt[f"{task}/{split}"] for split in SHORTCUT_SPLITS}
    shown = "; ".join(f"`{task}/{split}` BT {bt[f'{task}/{split}']:.3f}, ICRM {icrm[f'{task}/{split}']:.3f} "
                      f"({100 * gap:+.1f} points)" for split, gap in gaps.items())
    if all(gap > 0 for gap in gaps.values()):
        verdict = "**Length shortcut: ICRM follows it less than BT in this run**"
    else:
        verdict = "**Length shortcut: this run does not show ICRM's lead over BT** (one seed)"
    lines = [
        "## BT against ICRM in this run",
        "",
        f"* {verdict}: {shown}. In every training pair of the `{task}` task the chosen response is also "
        f"{LENGTH_GAP[0]}–{LENGTH_GAP[1]} words longer, while the labels follow only the decisive words. Held-out "
        "pairs put the longer response on a random side (`test_mixed`: ranking by length alone gives about 0.5) or "
        "on the rejected side (`test_reversed`: ranking by length alone gives about 0). ICRM here uses λ = "
        f"{shortcut['lambda']}, with {shortcut['n_train']} training and {shortcut['n_test']} held-out pairs per "
        "split, as BENCHMARKS.md §1a measures it; there, over 5 seeds, ICRM leads BT by +5.7 [+2.9, +8.5] "
        "points on `test_mixed` and +12.7 [+7.2, +18.2] on `test_reversed`, on every seed."
        + (" Both still mostly follow the shortcut (below 0.5 on `test_reversed`)."
           if max(bt[f"{task}/test_reversed"], icrm[f"{task}/test_reversed"]) < 0.5 else ""),
    ]
    noisy = metrics["accuracy"]
    a, b, n = noisy["BT"]["noisy/test"], noisy["ICRM"]["noisy/test"], metrics["settings"]["n_test"]
    same = "they tie" if _tie(a, b, n) else ("ICRM leads" if b > a else "BT leads")
    lines.append(
        f"* **Noisy labels: {same}** (`noisy/test` BT {a:.3f}, ICRM {b:.3f}, {100 * (b - a):+.1f} points; "
        f"two standard errors of a {n}-pair accuracy are {200 * (((a + b) / 2) * (1 - (a + b) / 2) / n) ** 0.5:.1f} "
        "points). ICRM uses the paper's λ = 0.1 here. Over 5 seeds BENCHMARKS.md §1a finds no difference "
        "(−0.2 [−1.5, +1.1] points)."
    )
    bon = metrics["bon"]
    if set(bon) == {"BT", "ICRM"}:
        top = str(bon["BT"]["n"][-1])
        a, b = bon["BT"]["accuracy"][top], bon["ICRM"]["accuracy"][top]
        same = "they tie" if _tie(a, b, bon["BT"]["num_prompts"]) else ("ICRM leads" if b > a else "BT leads")
        lines.append(f"* **Best-of-{top} verifiers: {same}** (BT {a:.3f}, ICRM {b:.3f}); see below why.")
    elif mode == "quick":
        lines.append("* Best-of-N verifiers (without `--quick`): they tie (BENCHMARKS.md §9, within 0.01 on "
                     "every seed).")
    return lines + [""]


def _tie(a: float, b: float, n: int) -> bool:
    """Whether accuracies ``a`` and ``b`` on ``n`` items are within two standard errors of one such accuracy."""
    p = (a + b) / 2
    return abs(a - b) <= 2 * (p * (1 - p) / n) ** 0.5


def accuracy_table(results: dict) -> list[str]:
    """Markdown table of pairwise accuracy, one row per method, one column per split."""
    splits = sorted({s for per in results.values() for s in per})
    lines = ["| method | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for method, per in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{per.get(s, float('nan')):.3f}" for s in splits) + " |")
    return lines


def probe_report(results: dict) -> list[str]:
    """What the spurious-feature probes measure, and what this run's numbers on them say."""
    lines = [
        "## Suffix probe",
        "",
        f"In the `suffix` training pairs the chosen response also ends with “{' '.join(SUFFIX)}” (the length "
        "probe above, with a longer chosen response, is built the same way). Labels still follow only the decisive "
        "words. `test_mixed` puts the suffix on a random side (following it alone gives about 0.5); "
        "`test_reversed` puts it on the rejected side, so a model that ranks by the suffix scores near 0 there and "
        "one that reads the decisive words keeps its `noisy/test` accuracy. ICRM is at λ = 0.1 here; BENCHMARKS.md "
        "§1a finds every method takes this shortcut, at any λ.",
        "",
    ]
    for probe in ("suffix",):
        reversed_split = f"{probe}/test_reversed"
        scores = {method: per[reversed_split] for method, per in results.items() if reversed_split in per}
        if not scores:
            continue
        shown = ", ".join(f"{method} {value:.3f}" for method, value in scores.items())
        verdict = (
            "every method ranks by the feature, not by the decisive words"
            if max(scores.values()) < 0.25
            else "the feature decides most rankings"
            if max(scores.values()) < 0.5
            else "some method reads the decisive words more than the feature"
        )
        lines.append(f"* `{reversed_split}`: {shown}: {verdict}.")
    return lines + [""]


def bon_report(bon: dict, agreement: dict | None = None) -> list[str]:
    """The best-of-N table and what the plot shows, from this run's numbers."""
    first = next(iter(bon.values()))
    ns = [str(n) for n in first["n"]]
    rows = [(f"{name} verifier", result["accuracy"]) for name, result in bon.items()]
    rows += [(label, first[key]) for key, label in
             (("majority", "majority vote"), ("random", "random pick"), ("pass", "pass@n (oracle)")) if key in first]
    lines = [
        "## Best-of-N on step-checked addition",
        "",
        f"{first['num_prompts']} held-out problems (“Compute 7 + 5 + 9 + 3.”), {ns[-1]} candidate solutions each, "
        f"{first['random'][ns[0]]:.0%} of them right on average. A wrong solution drops a carry at some step "
        "(that step's result is 10 too small and later steps continue from it). A verifier scores each candidate "
        "and picks the best of n (averaged over random n-subsets). The floor is a random pick, the ceiling "
        "(pass@n) whether any of the n is right; majority vote picks the most common final answer "
        "(self-consistency, no verifier).",
        "",
        "| | " + " | ".join(f"n = {n}" for n in ns) + " |",
        "|---|" + "---|" * len(ns),
    ]
    lines += [f"| {label} | " + " | ".join(f"{values[n]:.3f}" for n in ns) + " |" for label, values in rows]
    lines.append("")
    top, random_top = ns[-1], first["random"][ns[-1]]
    for name, result in bon.items():
        below = [n for n in ns[1:] if result["accuracy"][n] <= first["random"][n]]
        verdict = "beats a random pick at every n > 1" if not below else f"does not beat a random pick at n = {', '.join(below)}"
        lines.append(f"* {name} verifier: {result['accuracy'][top]:.3f} at n = {top} "
                     f"(random {random_top:.3f}, oracle {first['pass'][top]:.3f}); it {verdict}.")
    if "majority" in first:
        best = max(result["accuracy"][top] for result in bon.values())
        majority = first["majority"][top]
        relation = "below" if majority < best else "at or above"
        lines.append(
            f"* Majority vote: {majority:.3f} at n = {top}, {relation} the best verifier. Wrong solutions that drop "
            "the same carries agree on the same wrong answer, so a vote can go to a wrong answer; a verifier "
            "checks the steps instead."
        )
    gap = max(abs(a - b) for a, b in zip(*(list(r["accuracy"].values()) for r in bon.values()))) if len(bon) == 2 else None
    if gap is not None:
        lines.append(f"* The two verifiers differ by at most {gap:.3f} at any n (one seed; BENCHMARKS.md §9 has three, "
                     "within 0.01 of each other on every seed: near the ceiling, this task shows that verification "
                     "works, not which loss is better).")
    if agreement:
        lines.append(
            f"* Why they tie: they are different models (their scores differ by {agreement['mean_abs_score_gap']:.2f} "
            f"on average), but they put the right and the wrong candidates in the same order in "
            f"{agreement['same_order']} of {agreement['problems']} problems. Sampled solutions repeat (a problem's "
            f"{ns[-1]} candidates hold {agreement['distinct_candidates']:.1f} distinct ones on average), which leaves "
            "few orders to disagree on, and best-of-n only asks whether the top-scored candidate is right."
        )
    return lines + figure("best-of-N", "bon.png")


def attribution_report(attribution: dict) -> list[str]:
    """Which tokens carry the reward changes of BT and ICRM, and whether they are the decisive words."""
    shares = attribution["decisive_share"]
    return [
        "## Which tokens carry the reward",
        "",
        "Per-token reward changes Δr of BT (top) and ICRM (bottom) on a held-out response "
        "(interactive version: [explain.html](explain.html)). The words that set the true reward are "
        + ", ".join(f"`{w}`" for w in GOOD_WORDS + BAD_WORDS) + "; the rest is filler. Over the first "
        f"{attribution['pairs']} held-out pairs they are {attribution['decisive_token_share']:.0%} of the response "
        "tokens and get " + ", ".join(f"{share:.0%} ({name})" for name, share in shares.items()) + " of Σ|Δr|"
        + (": at this scale neither model puts its reward changes on them, so the largest |Δr| the page lists are "
           "mostly filler words."
           if max(shares.values()) < 2 * attribution["decisive_token_share"] else ".")
        + " BENCHMARKS.md §2 measures this over 5 seeds: ICRM (λ = 0.3) moves a few points of Σ|Δr| towards the "
        "decisive words, on every seed, but every model stays near chance.",
        *figure("explain", "explain.png"),
    ]


def dpo_report(dpo: dict) -> list[str]:
    """The policy loop's table: each policy's true reward and its wins against the SFT policy."""
    lines = [
        "## Policy loop: DPO on BT- vs ICRM-ranked pairs",
        "",
        (
            f"4 samples per training prompt from the noisy SFT policy; best vs worst by each reward model gave "
            f"{dpo['pairs']['BT']} (BT) and {dpo['pairs']['ICRM']} (ICRM) DPO pairs; DPO 2 epochs, lr 1e-4, β 0.1. "
            f"Judged by the true reward on {dpo['prompts']} held-out prompts × {dpo['samples_per_prompt']} samples "
            "(win/tie/lose: sample j of a prompt vs the SFT policy's sample j; the SFT policy is the baseline). "
            "The tiny policies' samples are mostly byte soup (word pieces and stray bytes, a 2-layer model trained "
            "from scratch); the true reward counts the good and bad words in them all the same."
        ),
        "",
        "| policy | mean true reward | win / tie / lose vs SFT | mean words |",
        "|---|---|---|---|",
    ]
    for i, (name, p) in enumerate(dpo["policies"].items()):
        rates = "baseline" if i == 0 else " / ".join(f"{p[k]:.2f}" for k in ("win_rate", "tie_rate", "lose_rate"))
        lines.append(f"| {name} | {p['mean_reward']:.3f} ± {p['std_reward']:.2f} | {rates} | {p['mean_words']:.1f} |")
    return lines + [
        *figure("dpo", "dpo.png"),
        "One seed; benchmarks/DPO.md has the 5-seed comparison (no measurable difference between DPO-BT and DPO-ICRM).",
        "",
    ]


def process_report(process: dict) -> list[str]:
    """The per-step table of the shown chain, the step metrics on every test chain, and what they say."""
    chain, rewards = process["chain"], process["step_rewards"]
    methods = list(rewards)
    truth = first_error(chain["labels"])
    lines = [
        "## Process rewards, step by step",
        "",
        f"The `steps` task counts days of the week forward, one line a step ({process['n_train']} training chains, "
        "about half of them right; a wrong chain slips at a random step and later lines count on from the wrong "
        "day). BT and ICRM learn from outcome labels only (is the last line right), the PRM from a label on every "
        "step. Each model's σ(r) at the end of each step of one held-out chain, the first test chain of 4 or more "
        "steps that goes wrong in its middle (chosen by its labels before training):",
        "",
        f"Prompt: “{chain['prompt']}”",
        "",
        "| step | text | true label | " + " | ".join(f"{m} σ(r)" for m in methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for k, (text, label) in enumerate(zip(chain["steps"], chain["labels"])):
        cells = " | ".join(f"{sigmoid(rewards[m][k]):.2f}" for m in methods)
        lines.append(f"| {k + 1} | {text} | {'✓ right' if label else '✗ wrong'} | {cells} |")
    lines.append("")
    for method in methods:
        probabilities = [sigmoid(r) for r in rewards[method]]
        flagged = predicted_first_error(rewards[method])
        where = "no step" if flagged < 0 else f"step {flagged + 1}"
        verdict = ", the true first wrong step" if flagged == truth else f", but the true first wrong step is {truth + 1}"
        lines.append(f"* {method}: σ(r) spans {min(probabilities):.2f}–{max(probabilities):.2f} on this chain; "
                     f"the first step below 0.5 is {where}{verdict}.")
    lines += [
        "",
        f"Over all {process['n_test']} held-out chains (step AUROC: right vs wrong prefixes; first-error F1: "
        "ProcessBench's harmonic mean of the accuracies on wrong and on right chains; localisation: the largest "
        "drop in σ(r) is at the first wrong step):",
        "",
        "| model | learns from | " + " | ".join(STEP_METRICS.values()) + " |",
        "|---|---|" + "---|" * len(STEP_METRICS),
    ]
    for method, values in process["test"].items():
        cells = " | ".join("n/a" if values[k] is None else f"{values[k]:.3f}" for k in STEP_METRICS)
        lines.append(f"| {method} | {STEP_METHODS[method][1]} | {cells} |")
    lines.append("")
    for method, values in process["test"].items():
        auroc = values["step_auroc"]
        if auroc is None or auroc >= 0.5:
            continue
        why = (
            "Learning from outcome labels only, nothing trains its scores of unfinished chains; over 5 seeds "
            "BENCHMARKS.md §7 finds outcome-label BCE at chance (step AUROC 0.505 ± 0.019), so a value a little "
            "under 0.5 means no step-level signal, not a reversed one."
            if STEP_METHODS[method][1] == "outcome labels" else "One seed; BENCHMARKS.md §7 has five."
        )
        lines.append(f"* {method}'s step AUROC, {auroc:.3f}, is below chance (0.5, the dotted line in the plot): it "
                     f"ranks a wrong prefix above a right one slightly more often than the reverse. {why}")
    return lines + [
        *figure("steps", "steps.png"),
        "Per-token rewards on the same chain, each step's end marked with its σ(r) and true label "
        "(interactive version: [steps-explain.html](steps-explain.html)):",
        *figure("steps-explain", "steps-explain.png"),
        "One seed; BENCHMARKS.md §7 has 5 seeds (outcome-label ICRM stays far from a PRM there; the consistency "
        "term added to a PRM helps it).",
        "",
    ]


def loss_report(losses: dict) -> list[str]:
    """losses.png: one panel per loss term, and how the SFT term moved."""
    lines = [
        "## Training losses (noisy task)",
        "",
        "One panel per term: the Bradley–Terry loss (every method), the consistency term (ICRM only) and the "
        "SFT term (GRM and ICRM only; BT has none, so the methods' totals are not comparable). The SFT term is "
        "−log π of the chosen responses through the reward model's own copy of the generator's LM head; it starts "
        "where the generator left off and changes because the reward gradient reshapes the shared backbone (the "
        "SFT gradient into the backbone is scaled down by `--sft-backbone-grad`).",
    ]
    moved = [
        f"{method} {'rose' if terms['sft'][-1][1] > terms['sft'][0][1] else 'fell'} from "
        f"{terms['sft'][0][1]:.2f} to {terms['sft'][-1][1]:.2f}"
        for method, terms in losses.get("noisy", {}).items() if terms.get("sft")
    ]
    if moved:
        lines[-1] += " In this run " + "; ".join(moved) + " (first and last logged values)."
    return lines + figure("losses", "losses.png")
