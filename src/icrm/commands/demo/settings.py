"""What the demo runs: each mode's sizes and hyper-parameters, and the methods each stage compares.

The benchmarks read the task settings from here (``benchmarks/harness.py``), so the demo and the
multi-seed studies train on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and hyper-parameters of one demo mode (tiny Llama, CPU)."""

    n_train: int = 300
    n_test: int = 500
    epochs: float = 3.0
    sft_epochs: float = 20.0  # a generator that has learnt the filler process
    batch_size: int = 16
    lr: float = 1e-3
    max_length: int = 128
    probes: bool = True
    addition_train: int = 1000
    addition_bon: int = 300
    dpo: bool = True  # the policy stage (sample -> dpo-pairs -> dpo -> compare)
    dpo_eval_prompts: int = 200
    process: bool = True  # the process-reward stage (BT, ICRM and a PRM on the steps task)
    verification: bool = True  # pointwise verifiers and best-of-N on step-checked addition
    steps_train: int = 1000  # benchmarks/process.py's: fewer chains left some seeds' PRM untrained
    steps_test: int = 300
    steps_epochs: float = 10.0
    seed: int = 0


FULL = DemoSettings()
QUICK = replace(FULL, n_test=200, probes=False, addition_train=400, addition_bon=100, dpo=False, process=False,
                verification=False)

# Reward-model methods the preference stage compares: name -> (preset, λ override)
METHODS = {"BT": ("bt", None), "GRM": ("grm", None), "ICRM": ("icrm", None)}
# The length shortcut as benchmarks/reproduction.py sets it up (scratch setup): the task's training pairs, the
# same held-out pairs per split whatever the mode, BT against ICRM at a λ above the preset's, where ICRM's lead
# over BT held on every seed.
SHORTCUT_TASK, SHORTCUT_LAMBDA, SHORTCUT_TEST = "length", 0.3, 500
SHORTCUT_METHODS = {"BT": ("bt", None), "ICRM": ("icrm", SHORTCUT_LAMBDA)}
SHORTCUT_SPLITS = ("test_mixed", "test_reversed")
LOSS_TERMS = ("bt", "icrm", "sft")  # plotted one panel each (losses.png)
LABEL_FLIP = {"noisy": 0.25}  # share of training labels flipped per task (label noise; none elsewhere)

# Process-reward models the process stage compares on the steps task: name -> (preset, what it learns from)
STEP_METHODS = {"BT": ("bt", "outcome labels"), "ICRM": ("icrm", "outcome labels"), "PRM": ("prm", "step labels")}
STEP_METRICS = {"step_auroc": "step AUROC", "first_error_f1": "first-error F1", "localization": "localisation"}


@dataclass(frozen=True)
class RealDemoSettings:
    """The real-model stage (``icrm demo --real``): SmolLM2-135M-Instruct with LoRA on a slice of real chat pairs.

    Sized to run in minutes on a laptop CPU: the accuracies it reports rest on a few
    dozen pairs each, a demonstration of the loop rather than a measurement
    (``benchmarks/real_quality.py`` is the measurement).
    """

    model: str = "smollm2-135m"
    n_train: int = 32
    n_test: int = 32
    llmbar_per_subset: int = 8  # the first pairs of each of LLMBar's five subsets
    max_length: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    lr: float = 2e-4
    batch_size: int = 8
    epochs: float = 1.0
    seed: int = 0


REAL = RealDemoSettings()
# BT against ICRM at the paper's λ; the generator is the instruct model as it is (no SFT step, to stay short)
REAL_METHODS = {"BT": ("bt", None), "ICRM": ("icrm", None)}
REAL_EVALS = {"heldout": "held-out instructions", "reversed": "chosen is the shorter",
              "verbosity": "padding appended to rejected", "llmbar": "LLMBar (Chat Hard)"}
