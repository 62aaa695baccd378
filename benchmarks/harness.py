"""What every benchmark shares: the demo's task settings, statistics over seeds, machine info, resumable results.

The benchmarks import icrm's public API only, and icrm never imports them:
the task settings are the demo's (:data:`icrm.commands.demo.FULL`), read here, so a
benchmark that claims "the demo's settings" cannot drift from them. They are
read when asked for: a measured process (train_throughput.py's TRL baseline)
does not pay for importing the demo.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from icrm.outputs import staged_file, write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# The throughput benchmarks' real conversations: Anthropic HH's harmless-base test split, read where it is shared.
HH_DATA = Path(os.environ.get("ICRM_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def task_settings() -> dict:
    """The demo's preference-task settings (reproduction.py and the benchmarks built on it), a fresh dict."""
    from icrm.commands.demo import FULL

    return {
        "n_train": FULL.n_train,
        "n_test": FULL.n_test,
        "epochs": FULL.epochs,
        "sft_epochs": FULL.sft_epochs,
        "batch_size": FULL.batch_size,
        "lr": FULL.lr,
        "max_length": FULL.max_length,
    }


def steps_settings() -> dict:
    """The demo's process-stage settings (process.py): more chains and epochs, as a PRM needs to learn the check."""
    from icrm.commands.demo import FULL

    return {**task_settings(), "n_train": FULL.steps_train, "n_test": FULL.steps_test, "epochs": FULL.steps_epochs,
            "sft_epochs": FULL.steps_epochs}


def label_flip(task: str) -> float:
    """The share of a task's training labels the demo flips (the noisy task's label noise; 0 elsewhere)."""
    from icrm.commands.demo import LABEL_FLIP

    return LABEL_FLIP.get(task, 0.0)

# ---------------------------------------------------------------- statistics

# Two-sided 95 % critical values of Student's t, df = 1..30 (scipy is not a dependency).
# fmt: off
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
# fmt: on


def t95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (scipy's when installed)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return T95[df - 1] if df <= 30 else 1.960


def mean_ci(xs: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95 % t-interval (0 for a single value, which has no spread)."""
    if len(xs) < 2:
        return statistics.mean(xs), 0.0
    return statistics.mean(xs), t95(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))


def mean_std(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sample std`` of ``scale * xs`` (percent by default); one value has no spread and says so."""
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0] * scale:.{digits}f} (1 seed)"
    return f"{statistics.mean(xs) * scale:.{digits}f} ± {statistics.stdev(xs) * scale:.{digits}f}"


def paired(xs: list[float], ys: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """Mean of ``scale * (x − y)`` over seeds, its 95 % t-interval, and ``k/n`` seeds where x > y.

    Rows are paired by seed (same data, same generator), so the interval is on
    the per-seed differences; one seed gives its difference and no interval.
    """
    d = [scale * (x - y) for x, y in zip(xs, ys)]
    if not d:
        return "–"
    if len(d) == 1:
        return f"{d[0]:+.{digits}f} (1 seed)"
    m, half = mean_ci(d)
    return f"{m:+.{digits}f} [{m - half:+.{digits}f}, {m + half:+.{digits}f}] {sum(x > 0 for x in d)}/{len(d)}"


# ---------------------------------------------------------------- command line


def seeded_parser(doc: str, seeds: int) -> argparse.ArgumentParser:
    """A per-seed benchmark's parser: its docstring's first line, ``--seeds``, ``--first-seed`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=seeds, help="number of seeds (first-seed .. first-seed+N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    return parser


def start(args: argparse.Namespace) -> list[int]:
    """Set ``--threads`` and a fresh model cache (unless ICRM_CACHE names one), and return the seeds to run."""
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("ICRM_CACHE", tempfile.mkdtemp(prefix="icrm-cache-"))
    return list(range(args.first_seed, args.first_seed + args.seeds))


# ---------------------------------------------------------------- machine and results


def machine() -> dict:
    """Where a result was measured: CPU model, cores, threads, versions, 1-minute load average and date."""
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def measured(info: dict) -> str:
    """A report's first words: where and when a :class:`ResultsFile`'s numbers were measured, and how long it took."""
    m = info["machine"]
    return (
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads), "
        f"torch {m['torch']}, transformers {m['transformers']}; total runtime {info['runtime_s'] / 60:.1f} min"
    )


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically: an interrupted report never leaves half a table."""
    with staged_file(path) as staging:
        staging.write_text(text)


class ResultsFile:
    """A benchmark's raw results JSON, resumed across runs and rewritten atomically after every model.

    ``identity`` (the settings, and whatever else fixes what a number means)
    must equal the file's: a re-run with other settings exits instead of mixing
    results. ``parts`` are the dicts the benchmark fills (per task and seed);
    :meth:`save` writes them with the machine info and the runtime summed over
    runs, so an interrupted run resumes from the last saved model.
    """

    def __init__(self, path: str | Path, parts: tuple[str, ...] = ("results",), **identity) -> None:
        self.path = Path(path)
        raw = json.loads(self.path.read_text()) if self.path.exists() else {}
        if raw and any(raw.get(key) != value for key, value in identity.items()):
            sys.exit(f"{self.path} was made with other settings; choose another --out")
        self.identity = identity
        self.parts = {name: raw.get(name, {}) for name in parts}
        self._runtime, self._start = raw.get("runtime_s", 0.0), time.time()

    def save(self) -> None:
        runtime = self._runtime + time.time() - self._start
        write_json(self.path, {**self.identity, "machine": machine(), "runtime_s": runtime, **self.parts})

    def load(self) -> dict:
        """The saved file (exits when no model was ever saved)."""
        if not self.path.exists():
            sys.exit("nothing to report")
        return json.loads(self.path.read_text())
