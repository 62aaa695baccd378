"""The process-reward stage: outcome-label BT and ICRM against a step-label PRM on the steps task.

Every model scores every step of the held-out chains; one chain, picked by its labels before any
model is trained, is shown step by step and token by token.
"""

from __future__ import annotations

from pathlib import Path

from ...evaluation import first_error, step_metrics
from ...outputs import note
from .settings import STEP_METHODS, STEP_METRICS, DemoSettings
from .training import reward_model, task_and_generator


def demo_chain(examples: list) -> int:
    """Index of the chain the demo shows: the first with at least 4 steps that goes wrong after a right step
    and has a wrong step after its first one (chosen by its labels alone, before any model is trained)."""
    for i, ex in enumerate(examples):
        if len(ex.steps) >= 4 and 1 <= first_error(ex.labels) <= len(ex.steps) - 2:
            return i
    raise ValueError("no test chain goes wrong in its middle")



def process_stage(root: Path, settings: DemoSettings) -> dict:
    """BT and ICRM on outcome labels, a PRM on step labels: step scores on one held-out chain and on all.

    One SFT generator on every training chain (right and wrong: the
    reference's generator data) starts every model and gives ICRM its
    consistency weights. The outcome methods read each stepwise row as a
    pointwise one whose label is its last step's. Also writes the shown
    chain's per-token rewards under the three models, step ends marked
    (``steps-explain.html`` and ``.png``).
    """
    from ...data import load_examples
    from ...explain import explain_responses, render_html, render_png
    from ...modeling import RewardModel

    data, generator = task_and_generator(
        "steps", root, settings, "right and wrong chains", "all", settings.steps_epochs,
        n_train=settings.steps_train, n_test=settings.steps_test,
    )
    test = load_examples(str(data / "test.jsonl")).examples
    index = demo_chain(test)
    shown = test[index]
    chain = {"id": shown.id, "prompt": shown.prompt[-1]["content"], "steps": shown.steps, "labels": shown.labels}
    rewards, metrics, explained = {}, {}, []
    for method, (preset, _) in STEP_METHODS.items():
        note(f"[bold]steps[/bold]: training {method}")
        model_dir = root / "models" / f"steps-{method.lower()}"
        reward_model(data / "train.jsonl", model_dir, generator, preset, settings, epochs=settings.steps_epochs)
        rm = RewardModel.from_pretrained(str(model_dir))
        scores = rm.step_rewards_batch([ex.prompt for ex in test], [ex.steps for ex in test], batch_size=64)
        rewards[method] = scores[index]
        summary = step_metrics(scores, [ex.labels for ex in test])
        metrics[method] = {key: summary[key] for key in STEP_METRICS}
        explained.append(explain_responses(rm, shown.prompt, [("chain", shown.steps)], method))
        explained[-1][0].step_labels = shown.labels
    title = "BT, ICRM (outcome labels) and a PRM (step labels) on a held-out chain"
    (root / "steps-explain.html").write_text(render_html(title, shown.prompt, explained))
    render_png(explained, root / "steps-explain.png", row_scales=True)  # outcome RMs' |Δr| are far below the PRM's
    return {"chain": chain, "step_rewards": rewards, "test": metrics, "n_test": len(test),
            "n_train": settings.steps_train}

