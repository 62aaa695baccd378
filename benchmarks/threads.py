"""Does icrm's thread default keep ``icrm demo --quick`` fast beside other work?

torch's default (one intra-op thread per core, spinning while it waits)
oversubscribes the cores as soon as another busy process shares them. icrm
now picks the free cores from the load average (icrm/threads.py). This runs
``icrm demo --quick`` as a user would (a subprocess, no thread variables set)
in four settings, interleaved, ``--repeats`` times each:

* idle, icrm's default threads;
* idle, torch's default (``--threads`` = what a fresh ``import torch`` picks);
* beside one busy process (``python -c 'while True: pass'``), icrm's default;
* beside one busy process, torch's default.

A run longer than ``--timeout`` is stopped and reported as unfinished
(its timeout counts as a lower bound in the medians). Before an idle run it
waits (at most ``--settle-max`` s) for the one-minute
load average to fall below ``--settle``, so earlier runs do not count as
load; the busy process starts ``--warmup`` s before its runs, so the load
average that icrm reads reflects it, as it would for a job that has been
running for a while. Every run records its wall time, the thread count the
demo used (its metrics.json) and ``os.getloadavg()`` before and after: on a
machine shared with other people those say how idle "idle" was.

    python -m benchmarks.threads --repeats 2

Raw numbers go to benchmarks/results/threads.json, the table to threads.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from icrm.outputs import write_json

from .harness import RESULTS, machine, write_text

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ICRM_THREADS")


def clean_env() -> dict[str, str]:
    """The environment of a user who set no thread variable."""
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | {"HF_HUB_OFFLINE": "1"}


def torch_default_threads() -> int:
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                              check=True).stdout)


def wait_for_load_below(threshold: float, max_wait: float) -> float:
    start = time.time()
    while os.getloadavg()[0] >= threshold and time.time() - start < max_wait:
        time.sleep(5)
    return time.time() - start


def run_demo(icrm: str, threads: int | None, work: Path, timeout: float) -> dict:
    """One ``icrm demo --quick``; a run past ``timeout`` is stopped and recorded as unfinished."""
    out = work / "demo"
    shutil.rmtree(out, ignore_errors=True)
    command = [icrm, "--quiet"] + ([] if threads is None else ["--threads", str(threads)])
    command += ["demo", "--quick", "--output", str(out)]
    env = clean_env() | {"ICRM_CACHE": str(work / "cache")}
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"wall_s": None, "timed_out_after_s": timeout, "threads": threads, "load_before": load_before,
                "load_after": os.getloadavg()}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    used = json.loads((out / "metrics.json").read_text())["threads"]
    return {"wall_s": round(wall, 1), "threads": used, "load_before": load_before, "load_after": os.getloadavg()}


def _shown(run: dict) -> str:
    return str(run["wall_s"]) if run["wall_s"] is not None else f"> {run['timed_out_after_s']:.0f} (stopped)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settle", type=float, default=0.7, help="load average to wait for before an idle run")
    parser.add_argument("--settle-max", type=float, default=60.0, help="longest wait for it, in seconds")
    parser.add_argument("--timeout", type=float, default=600.0, help="a run stops here and counts as unfinished")
    parser.add_argument("--warmup", type=float, default=75.0, help="seconds the busy process runs before its runs")
    parser.add_argument("--out", default="threads")
    args = parser.parse_args()

    icrm = shutil.which("icrm") or str(Path(sys.executable).with_name("icrm"))
    torch_threads = torch_default_threads()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="icrm-threads-") as tmp:
        work = Path(tmp)
        for repeat in range(args.repeats):
            for threads, name in ((None, "icrm default"), (torch_threads, "torch default")):
                waited = wait_for_load_below(args.settle, args.settle_max)
                runs.append({"setting": "idle", "threads_option": name, "repeat": repeat, "waited_s": round(waited),
                             **run_demo(icrm, threads, work, args.timeout)})
                print(json.dumps(runs[-1]), flush=True)
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(args.warmup)
                for threads, name in ((None, "icrm default"), (torch_threads, "torch default")):
                    runs.append({"setting": "beside one busy process", "threads_option": name, "repeat": repeat,
                                 **run_demo(icrm, threads, work, args.timeout)})
                    print(json.dumps(runs[-1]), flush=True)
            finally:
                busy.kill()
                busy.wait()

    cells: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        cells.setdefault((run["setting"], run["threads_option"]), []).append(run)
    # an unfinished run counts as its timeout: a lower bound
    medians = {key: statistics.median(r["wall_s"] or r["timed_out_after_s"] for r in cell) for key, cell in cells.items()}
    m = machine()
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{m['cpu']}, {m['cores']} cores, {platform.platform()}",
        "torch_default_threads": torch_threads,
        "runs": runs,
        "median_wall_s": {f"{s} / {t}": m for (s, t), m in medians.items()},
        "loaded_over_idle": {
            t: medians[("beside one busy process", t)] / medians[("idle", t)] for t in ("icrm default", "torch default")
        },
    }
    write_json(RESULTS / f"{args.out}.json", result)
    lines = [
        f"`icrm demo --quick`, {result['date']}, {result['machine']}; torch's default is {torch_threads} threads.",
        "",
        "| setting | threads | runs (s) | median (s) | threads used | load before → after |",
        "|---|---|---|---|---|---|",
    ]
    for (setting, option), cell in cells.items():
        loads = ", ".join(f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f}" for r in cell)
        lines.append(
            f"| {setting} | {option} | {', '.join(_shown(r) for r in cell)} | {medians[(setting, option)]:.1f} "
            f"| {', '.join(str(r['threads']) for r in cell)} | {loads} |"
        )
    lines += ["", "Loaded / idle (medians): " + ", ".join(
        f"{option} {ratio:.2f}×" for option, ratio in result["loaded_over_idle"].items())]
    write_text(RESULTS / f"{args.out}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
