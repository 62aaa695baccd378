"""Can the demo's verifiers beat a random pick? Best-of-N of the demo's verification stage over seeds.

Runs ``icrm.commands.demo.run_verification`` (SFT generator, BT and ICRM-nosft pointwise
verifiers, best-of-N on held-out problems) exactly as ``icrm demo`` does, for
each seed and mode, on the demo's task (``addition``: a wrong solution drops
a carry) and on the earlier one (``arithmetic``: a wrong step is off by 1-3,
with * and -), which the demo used before.

    python -m benchmarks.demo_bon --seeds 3

Raw numbers go to benchmarks/results/demo_bon.json, the table to demo_bon.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from icrm.commands.demo import FULL, QUICK, run_verification
from icrm.outputs import set_quiet, write_json
from icrm.threads import default_threads, set_threads

from .harness import RESULTS, write_text

CELLS = (("addition", "quick"), ("addition", "full"), ("arithmetic", "full"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="demo_bon")
    args = parser.parse_args()
    set_quiet(True)
    set_threads(default_threads())  # as the icrm command would
    runs = []
    for task, mode in CELLS:
        for seed in range(args.seeds):
            settings = replace(QUICK if mode == "quick" else FULL, seed=seed)
            start = time.time()
            with tempfile.TemporaryDirectory(prefix="icrm-bon-") as tmp:
                results: dict = {}
                run_verification(Path(tmp), settings, results, task)
            first = results["BT"]
            run = {"task": task, "mode": mode, "seed": seed, "seconds": round(time.time() - start),
                   "threads": torch.get_num_threads(),
                   **{k: first[k] for k in ("random", "majority", "pass")},
                   **{f"{name} verifier": r["accuracy"] for name, r in results.items()}}
            runs.append(run)
            print(json.dumps(run), flush=True)
    write_json(RESULTS / f"{args.out}.json", {"date": datetime.date.today().isoformat(), "runs": runs})
    columns = ("BT verifier", "ICRM verifier", "majority", "random", "pass")
    lines = [f"Best-of-N at n = 8 (n = 2 in brackets), {args.seeds} seeds; seed-by-seed values, then the mean.", "",
             "| task | mode | " + " | ".join(columns) + " | verifier > random@n at every n > 1 |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    for task, mode in CELLS:
        cell = [r for r in runs if (r["task"], r["mode"]) == (task, mode)]
        shown = []
        for column in columns:
            values = [r[column]["8"] for r in cell]
            shown.append(", ".join(f"{v:.2f}" for v in values) + f" (mean {statistics.mean(values):.2f}; "
                         f"n=2 {statistics.mean(r[column]['2'] for r in cell):.2f})")
        beats = sum(all(r[v][n] > r["random"][n] for v in columns[:2] for n in ("2", "4", "8")) for r in cell)
        lines.append(f"| {task} | {mode} | " + " | ".join(shown) + f" | {beats}/{len(cell)} seeds |")
    write_text(RESULTS / f"{args.out}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
