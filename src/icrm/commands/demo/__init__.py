"""``icrm demo``: the embedded end-to-end run, on a CPU, with no downloads.

It generates the noisy-preference task (and, in full mode, the spurious-feature probes), trains a
tiny generator by SFT on the chosen and rejected responses (the reference's generator), trains BT,
GRM and ICRM reward models initialised from it (the generator supplies the consistency weights),
evaluates every model on every split, trains pointwise verifiers on step-checked addition and runs
best-of-N with them, then writes ``report.md``, PNG plots and ``metrics.json``. Full mode also
closes the policy loop on the noisy task: samples from an SFT policy (trained on the chosen
responses only), DPO pairs ranked by the BT and by the ICRM reward model, one DPO policy per
ranking, and the three policies judged by the task's true reward. And it reads process rewards: on
the day-counting ``steps`` task, BT and ICRM trained on outcome labels and a PRM trained on step
labels score every step of the same held-out chain, next to the chain's true step labels.
``--real`` runs a separate stage instead (``real``): BT and ICRM from a real pretrained LLM
(SmolLM2-135M-Instruct, offline) on real chat preferences.

One module per part: ``settings`` (the modes and the methods compared), ``training`` (the models
every stage trains), one module per stage (``preference``, ``verification``, ``policy``,
``process``), ``figures`` and ``report`` (from the metrics alone), ``run`` (the stages in turn), and
``real`` (the real-model stage, its own report).
"""

from ...exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "process": ["demo_chain"],
    "real": ["run_real_demo"],
    "run": ["run_demo"],
    "settings": ["DemoSettings", "FULL", "LABEL_FLIP", "QUICK", "REAL", "RealDemoSettings"],
    "verification": ["run_verification"],
})
