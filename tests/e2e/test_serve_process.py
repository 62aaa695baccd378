"""``icrm serve`` as a real process: a free loopback port, concurrent clients batched together, a SIGINT stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from helpers import PROMPTS, RESPONSES, rendered


def _read_url(process, seconds: float) -> str:
    """The URL from the server's first JSON line on stdout (its start message)."""
    found = {}

    def read():
        line = process.stdout.readline()
        if line:
            found["url"] = json.loads(line)["url"]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    if "url" not in found:
        process.kill()
        pytest.fail(f"icrm serve did not start: {process.stderr.read()[-2000:]}")
    return found["url"]


@pytest.mark.slow
def test_icrm_serve_subprocess_batches_concurrent_clients_and_stops_cleanly(tiny_rm, tmp_path):
    checkpoint = tmp_path / "rm"
    tiny_rm.save_pretrained(checkpoint)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "icrm.cli", "--log-format", "json", "serve", "--model", str(checkpoint),
               "--host", "127.0.0.1", "--port", "0", "--max-batch-size", "8", "--max-wait-ms", "200"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = _read_url(process, 60)
        assert url.startswith("http://127.0.0.1:")
        prompts = [PROMPTS[i % 4] for i in range(8)]
        responses = [f"{RESPONSES[i % 4]} fox {i}" for i in range(8)]
        texts = [rendered(tiny_rm.tokenizer, p, r) for p, r in zip(prompts, responses)]

        async def clients():
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                answers = await asyncio.gather(*(client.post("/get_reward", json={"query": [t]}) for t in texts))
                bad = await client.post("/score", json={"prompts": ["a"]})
                after = await client.post("/score", json={"prompts": prompts[:1], "responses": responses[:1]})
                return answers, bad, after, (await client.get("/metrics")).json()

        answers, bad, after, metrics = asyncio.run(asyncio.wait_for(clients(), 60))
        assert [a.status_code for a in answers] == [200] * 8
        rewards = [a.json()["rewards"][0] for a in answers]
        assert rewards == pytest.approx(tiny_rm.score(prompts, responses), abs=1e-5)
        assert bad.status_code == 422 and bad.json() == {"error": "responses: missing field"}
        assert after.status_code == 200 and after.json()["rewards"][0] == pytest.approx(rewards[0], abs=1e-5)
        assert metrics["batch_size"]["max"] > 1 and metrics["batches"] < 9  # requests were batched together
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as raw:  # 50 MB announced, none sent
            raw.sendall(b"POST /get_reward HTTP/1.1\r\nHost: icrm\r\nContent-Length: 50000000\r\n\r\n")
            assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")  # answered without waiting for the body
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"stopped": str(checkpoint)}
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
