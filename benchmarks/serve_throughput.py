#!/usr/bin/env python
"""``icrm serve`` under load: dynamic batching vs one request at a time (icrm issue 17).

A benchmark, not a test. It builds a reward model (``--preset``, random
weights: throughput does not depend on what the model learned) with a
tokenizer trained on Anthropic HH text, renders real HH conversations (chosen
responses of the shipped harmless-base test file) through its chat template,
and starts one ``icrm serve`` subprocess per mode, each on a free loopback
port:

  dynamic       --max-batch-size 16 --max-wait-ms 0 (the default: batch what
                queued while the model was busy)
  dynamic-wait  --max-batch-size 16 --max-wait-ms 10 (also wait for a batch to fill)
  serial        --max-batch-size 1 (every request scored alone, as OpenRLHF's
                own serve_rm does for its one-query requests; icrm's default on a CPU)

Clients send OpenRLHF-style requests, one conversation per ``/get_reward``
request, from 1, 8 and 64 concurrent clients (each cell bounded by a request
count and a time limit; the modes take turns in a rotated order, so load from
other jobs spreads over all of them). Reported per cell: requests/s,
client-side p50/p99 latency, and the mean batch size the server's
``/metrics`` saw in that cell.
To explain the numbers it also times the model alone, in-process: ms per
conversation scored one at a time, in batches of 16 random conversations, of
16 picked by length among 64 waiting (what the server does under load), and
of 16 of equal length. Everything stays on
127.0.0.1.

    python -m benchmarks.serve_throughput                        # small preset, about 4 minutes
    python -m benchmarks.serve_throughput --preset tiny --seconds 5

Results: benchmarks/results/serve_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from icrm.outputs import write_json
from icrm.serve import percentile, pick_batch

from .harness import HH_DATA, RESULTS, machine, write_text

MODES = {
    "dynamic": ["--max-batch-size", "16", "--max-wait-ms", "0"],
    "dynamic-wait": ["--max-batch-size", "16", "--max-wait-ms", "10"],
    "serial": ["--max-batch-size", "1", "--max-wait-ms", "0"],
}


def build_model(preset: str, directory: Path, n_rows: int, max_length: int) -> list[str]:
    """Save a random-weight reward model; return HH conversations rendered by its chat template."""
    from icrm.data import load_examples
    from icrm.modeling import RewardModel, build_causal_lm, train_tokenizer

    examples = load_examples(HH_DATA).examples[:n_rows]
    tokenizer = train_tokenizer((m["content"] for ex in examples for m in ex.prompt), 4096 if preset == "small" else 1024)
    rm = RewardModel.from_causal_lm(build_causal_lm(preset, tokenizer, seed=0), tokenizer)
    rm.save_pretrained(directory)
    texts = [
        tokenizer.apply_chat_template(ex.prompt + [{"role": "assistant", "content": ex.chosen}], tokenize=False)
        for ex in examples
    ]
    return [t for t in texts if len(tokenizer(t, add_special_tokens=False)["input_ids"]) <= max_length]


def start_server(model: Path, mode: str, max_length: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "icrm.cli", "--log-format", "json", "serve", "--model", str(model),
               "--host", "127.0.0.1", "--port", "0", "--max-length", str(max_length), *MODES[mode]]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    found = {}
    reader = threading.Thread(target=lambda: found.update(line=process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    if not found.get("line"):
        process.kill()
        raise SystemExit(f"icrm serve ({mode}) did not start")
    return process, json.loads(found["line"])["url"]


async def load_cell(url: str, texts: list[str], clients: int, max_requests: int, seconds: float) -> dict:
    """``clients`` concurrent loops of one-query requests until ``max_requests`` or ``seconds``."""
    latencies: list[float] = []
    next_text = iter(range(max_requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        before = (await client.get("/metrics")).json()
        started = time.perf_counter()
        deadline = started + seconds

        async def one_client():
            for i in next_text:
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                answer = await client.post("/get_reward", json={"query": [texts[i % len(texts)]]})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - started
        after = (await client.get("/metrics")).json()
    batches = after["batches"] - before["batches"]
    items = after["items"] - before["items"]
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_batch": round(items / batches, 2) if batches else 0.0,
    }


def forward_cost(model: Path, texts: list[str], rounds: int = 4) -> dict:
    """ms per conversation for the model alone: one at a time, padded batches of 16, equal-length batches of 16."""
    import random

    from icrm.data import Sequence
    from icrm.modeling import RewardModel

    rm = RewardModel.from_pretrained(str(model)).eval().to("cuda" if torch.cuda.is_available() else "cpu")
    seqs = [Sequence(ids, len(ids) - 1) for ids in rm.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    batches = [random.Random(k).sample(seqs, 16) for k in range(rounds)]
    pools = [random.Random(100 + k).sample(seqs, 64) for k in range(rounds)]
    picked = [[pool[i] for i in pick_batch([q.length for q in pool], 16)] for pool in pools]
    median = sorted(seqs, key=lambda q: q.length)[len(seqs) // 2]
    cases = {
        "single": lambda: [rm.sequence_rewards([q], 1) for b in batches + picked for q in b],
        "padded_16": lambda: [rm.sequence_rewards(b, 16) for b in batches],
        "picked_16": lambda: [rm.sequence_rewards(b, 16) for b in picked],
        "equal_length_16": lambda: [rm.sequence_rewards([median] * 16, 16) for _ in batches],
    }
    rm.sequence_rewards(batches[0], 16)  # warm-up
    costs = {}
    for name, fn in cases.items():
        started = time.perf_counter()
        fn()
        costs[name] = round((time.perf_counter() - started) / (16 * rounds * (2 if name == "single" else 1)) * 1000, 2)
    for name, group in (("padded_16", batches), ("picked_16", picked)):
        real = sum(q.length for b in group for q in b)
        costs[f"padding_efficiency_{name}"] = round(real / sum(16 * max(q.length for q in b) for b in group), 2)
    return costs


def run(args) -> dict:
    results = {"cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "rm"
        texts = build_model(args.preset, model, args.rows, args.max_length)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        lengths = sorted(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        results["texts"] = {"n": len(texts), "median_tokens": lengths[len(lengths) // 2], "max_tokens": lengths[-1]}
        results["forward_ms_per_item"] = forward_cost(model, texts)
        print(json.dumps(results["forward_ms_per_item"]), flush=True)
        servers = {mode: start_server(model, mode, args.max_length) for mode in MODES}
        try:
            for _, url in servers.values():
                asyncio.run(load_cell(url, texts, 4, 16, 30))  # warm-up, not reported
            for k, clients in enumerate(args.clients):
                order = list(MODES)[k % len(MODES):] + list(MODES)[: k % len(MODES)]  # rotated: load drifts
                for mode in order:
                    cell = asyncio.run(load_cell(servers[mode][1], texts, clients, args.requests, args.seconds))
                    cell["mode"] = mode
                    results["cells"].append(cell)
                    print(json.dumps(cell), flush=True)
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGINT)
            for process, _ in servers.values():
                process.wait(60)
    return results


def markdown(results: dict) -> str:
    cells = {(c["mode"], c["clients"]): c for c in results["cells"]}
    lines = [
        (
            f"Measured {results['date']} on {results['machine']}; preset `{results['preset']}`, "
            f"{results['texts']['n']} HH conversations (median {results['texts']['median_tokens']} tokens, "
            f"max {results['texts']['max_tokens']}), one conversation per request; each cell at most "
            f"{results['requests']} requests or {results['seconds']:g} s."
        ),
        "",
        "| clients | mode | requests | req/s | p50 ms | p99 ms | mean batch | req/s vs serial |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clients in results["clients"]:
        serial = cells.get(("serial", clients))
        for mode in MODES:
            c = cells.get((mode, clients))
            if c is None:
                continue
            ratio = f"{c['requests_per_s'] / serial['requests_per_s']:.2f}×" if serial else "-"
            lines.append(f"| {clients} | {mode} | {c['requests']} | {c['requests_per_s']:.1f} | {c['p50_ms']:.0f} | "
                         f"{c['p99_ms']:.0f} | {c['mean_batch']:.1f} | {ratio} |")
    cost = results["forward_ms_per_item"]
    lines += [
        "",
        (
            f"The model alone, in-process, ms per conversation: {cost['single']} one at a time; in batches "
            f"of 16: {cost['padded_16']} for random conversations (padding efficiency "
            f"{cost['padding_efficiency_padded_16']}), {cost['picked_16']} for 16 picked by length among 64 "
            f"waiting, as the server does (efficiency {cost['padding_efficiency_picked_16']}), "
            f"{cost['equal_length_16']} for 16 of equal length."
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=("tiny", "small"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=400, help="Most requests per cell.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Longest time per cell.")
    parser.add_argument("--rows", type=int, default=400, help="HH rows to render (longer than --max-length dropped).")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", default="serve_throughput")
    args = parser.parse_args()
    started = time.time()
    results = run(args)
    m = machine()
    results.update(
        date=m["date"],
        machine=f"{m['cpu']} ({m['cores']} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
                f"torch {m['torch']}",
        preset=args.preset, clients=args.clients, requests=args.requests, seconds=args.seconds,
        runtime_min=round((time.time() - started) / 60, 1),
    )
    write_json(RESULTS / f"{args.out}.json", results)
    write_text(RESULTS / f"{args.out}.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
