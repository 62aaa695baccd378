"""``icrm serve``: OpenRLHF's /get_reward, /score, dynamic batching and errors.

The tests drive the ASGI app in-process (httpx + ASGITransport, lifespan included); the real server,
started as a subprocess, is tested in tests/e2e/test_serve_process.py.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from helpers import PROMPTS, RESPONSES, post, rendered, talk, write_jsonl

from icrm import RewardModel
from icrm.serve import Metrics, ServeConfig, create_app, percentile, pick_batch

# ---------------------------------------------------------------- protocol


def test_get_reward_equals_offline_score_of_the_same_conversation(tiny_rm):
    texts = [rendered(tiny_rm.tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    answer = post(create_app(tiny_rm, ServeConfig()), "/get_reward", {"query": texts, "prompts": ["p"] * 4, "labels": [""] * 4})
    assert answer.status_code == 200
    data = answer.json()
    assert set(data) == {"rewards", "scores", "extra_logs"} and data["extra_logs"] == {}
    assert data["scores"] == data["rewards"]
    assert data["rewards"] == pytest.approx(tiny_rm.score(PROMPTS, RESPONSES), abs=1e-5)


def test_score_endpoint_gives_rewards_and_dense_per_token_rewards(tiny_rm):
    answer = post(create_app(tiny_rm, ServeConfig()), "/score",
                  {"prompts": PROMPTS, "responses": [RESPONSES[0], [{"role": "assistant", "content": RESPONSES[1]}],
                                                     *RESPONSES[2:]], "per_token": True})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["rewards"] == pytest.approx(tiny_rm.score(PROMPTS, RESPONSES), abs=1e-5)
    offline = tiny_rm.token_rewards_batch(PROMPTS, RESPONSES)
    for tokens, rewards, expected, response in zip(data["tokens"], data["token_rewards"], offline, RESPONSES):
        assert "".join(tokens) == response + "<|end|>"  # the texts line up with the response tokens
        assert rewards == pytest.approx(expected.tolist(), abs=1e-5)
        assert rewards[-1] == pytest.approx(data["rewards"][RESPONSES.index(response)])


def test_per_step_score_is_the_prefix_reward_at_each_steps_last_token_and_the_last_is_the_reward(tiny_rm):
    """A causal RM's reward at a step's last token depends on nothing after it: score the prefixes alone.
    The last step's score is read where the outcome reward is, at ``<|end|>``."""
    steps = ["the quick brown fox", "jumps over", "the lazy dog"]
    answer = post(create_app(tiny_rm, ServeConfig()), "/score",
                  {"prompts": [PROMPTS[0]], "responses": [steps], "per_step": True})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    prefixes = ["\n".join(steps[: k + 1]) for k in range(len(steps))]
    alone = tiny_rm.token_rewards_batch([PROMPTS[0]] * 2, prefixes[:2])
    assert data["step_rewards"][0][:2] == pytest.approx([float(r[-2]) for r in alone], abs=1e-5)  # [-1] is <|end|>
    assert data["rewards"][0] == pytest.approx(tiny_rm.score([PROMPTS[0]], [prefixes[-1]])[0], abs=1e-5)
    assert data["step_rewards"][0][-1] == pytest.approx(data["rewards"][0], abs=1e-5)


def test_per_step_scores_equal_icrm_score_per_step(tiny_rm, tmp_path, cli):
    tiny_rm.save_pretrained(tmp_path / "rm")
    rows = [{"prompt": PROMPTS[0], "completions": ["the quick brown fox", "jumps over", "the lazy dog"],
             "labels": [True, True, False]},
            {"prompt": PROMPTS[2], "completions": ["hello", "world today"], "labels": [True, True]}]
    scored = tmp_path / "scored.jsonl"
    done = cli("score", "--model", tmp_path / "rm", "--data", write_jsonl(tmp_path / "steps.jsonl", rows),
               "--output", scored, "--per-step", "--step-separator", " ; ")
    assert done.exit_code == 0, done.output
    offline = [json.loads(line) for line in scored.read_text().splitlines()]
    answer = post(create_app(RewardModel.from_pretrained(str(tmp_path / "rm")), ServeConfig()), "/score",
                  {"prompts": [r["prompt"] for r in rows], "responses": [r["completions"] for r in rows],
                   "per_step": True, "step_separator": " ; "})
    assert answer.status_code == 200, answer.text
    served = answer.json()
    for row, rewards, reward in zip(offline, served["step_rewards"], served["rewards"]):
        assert rewards == pytest.approx(row["step_rewards"], abs=1e-5)
        assert reward == pytest.approx(row["reward"], abs=1e-5)


def test_normalize_applies_the_training_mean_and_std(tiny_rm, monkeypatch):
    text = rendered(tiny_rm.tokenizer, PROMPTS[0], RESPONSES[0])
    raw = tiny_rm.score([PROMPTS[0]], [RESPONSES[0]])[0]
    monkeypatch.setattr(tiny_rm, "reward_stats", {"mean": 0.25, "std": 2.0})
    answer = post(create_app(tiny_rm, ServeConfig(normalize=True)), "/get_reward", {"query": [text]})
    assert answer.json()["rewards"][0] == pytest.approx((raw - 0.25) / 2.0, abs=1e-5)


def test_normalize_without_reward_statistics_is_refused(tiny_rm):
    from icrm.errors import UserError

    with pytest.raises(UserError, match=": normalize needs reward statistics"):
        create_app(tiny_rm, ServeConfig(normalize=True))


# ---------------------------------------------------------------- batching


def test_concurrent_single_requests_share_one_batch_and_get_their_own_answers(tiny_rm):
    texts = [rendered(tiny_rm.tokenizer, PROMPTS[i % 4], RESPONSES[i % 4] + " dog" * i) for i in range(12)]
    offline = tiny_rm.score([PROMPTS[i % 4] for i in range(12)], [RESPONSES[i % 4] + " dog" * i for i in range(12)])
    app = create_app(tiny_rm, ServeConfig(max_batch_size=12, max_wait_ms=5000))

    async def body(client):
        answers = await asyncio.gather(*(client.post("/get_reward", json={"query": [t]}) for t in texts))
        return [a.json()["rewards"][0] for a in answers], (await client.get("/metrics")).json()

    rewards, metrics = talk(app, body)
    assert rewards == pytest.approx(offline, abs=1e-5)  # no lost or crossed replies
    assert metrics["batches"] == 1 and metrics["batch_size"]["histogram"] == {"12": 1}  # full: no 5 s wait
    assert metrics["requests"] == {"get_reward": 12} and metrics["items"] == 12


def test_batches_never_exceed_max_batch_size(tiny_rm):
    texts = [rendered(tiny_rm.tokenizer, PROMPTS[0], "dog " * (i + 1)) for i in range(10)]
    app = create_app(tiny_rm, ServeConfig(max_batch_size=4, max_wait_ms=1))

    async def body(client):
        answer = await client.post("/get_reward", json={"query": texts})
        return answer.json()["rewards"], (await client.get("/metrics")).json()

    rewards, metrics = talk(app, body)
    assert rewards == pytest.approx(tiny_rm.score([PROMPTS[0]] * 10, ["dog " * (i + 1) for i in range(10)]), abs=1e-5)
    assert metrics["batch_size"] == {"mean": 10 / 3, "max": 4, "histogram": {"2": 1, "4": 2}}


def test_defaults_on_a_cpu_score_one_conversation_per_forward_pass(tiny_rm):
    async def body(client):
        return (await client.get("/health")).json()

    health = talk(create_app(tiny_rm, ServeConfig()), body)
    assert (health["max_batch_size"], health["max_wait_ms"], health["max_length"]) == (1, 0.0, 2048)


def test_pick_batch_takes_the_oldest_and_the_closest_lengths():
    assert pick_batch([100, 10, 95, 300, 101, 99], 3) == [0, 4, 5]  # |101-100| = |99-100|: earlier first
    assert pick_batch([50, 10, 20], 8) == [0, 1, 2]  # all fit
    assert pick_batch([7], 1) == [0]


def test_a_busy_server_batches_similar_lengths_together(tiny_rm, monkeypatch):
    short = rendered(tiny_rm.tokenizer, PROMPTS[2], "dog")
    long = rendered(tiny_rm.tokenizer, PROMPTS[2], "the quick brown fox jumps over the lazy dog " * 6)
    texts = [short, long] * 5
    lengths = []
    original = tiny_rm.sequence_rewards

    def record(seqs, batch_size):
        lengths.append(sorted({s.length for s in seqs}))
        return original(seqs, batch_size)

    monkeypatch.setattr(tiny_rm, "sequence_rewards", record)
    app = create_app(tiny_rm, ServeConfig(max_batch_size=5))
    rewards = post(app, "/get_reward", {"query": texts}).json()["rewards"]
    assert len(lengths) == 2 and all(len(batch) == 1 for batch in lengths)  # no short row padded to a long one
    assert rewards == pytest.approx(tiny_rm.score([PROMPTS[2]] * 10, ["dog", "the quick brown fox jumps over the lazy dog " * 6] * 5), abs=1e-5)


def test_metrics_and_health(tiny_rm):
    app = create_app(tiny_rm, ServeConfig(max_batch_size=8, max_length=64))
    text = rendered(tiny_rm.tokenizer, PROMPTS[0], RESPONSES[0])

    async def body(client):
        for n in (1, 2, 3):
            assert (await client.post("/get_reward", json={"query": [text] * n})).status_code == 200
        assert (await client.post("/get_reward", json={"query": "not a list"})).status_code == 422
        return (await client.get("/health")).json(), (await client.get("/metrics")).json()

    health, metrics = talk(app, body)
    assert health["status"] == "ok" and health["max_batch_size"] == 8 and health["max_length"] == 64
    assert metrics["requests"] == {"get_reward": 3} and metrics["items"] == 6 and metrics["errors"] == {"422": 1}
    assert metrics["latency_ms"]["requests"] == 3
    assert 0 < metrics["latency_ms"]["p50"] <= metrics["latency_ms"]["p99"]


def test_percentile_is_nearest_rank():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (5.0, 9.0, 10.0)
    assert percentile([7.0], 99) == 7.0
    snapshot = Metrics().snapshot(queue_depth=0)
    assert snapshot["batches"] == 0 and snapshot["batch_size"]["mean"] == 0.0


# ------------------------------------------------------------------ bad input

BAD = [
    ("/get_reward", b'{"query": ["a"', 400, "invalid JSON body"),
    ("/get_reward", b'["a", "b"]', 422, "the body must be a JSON object, got array"),
    ("/get_reward", b'{"prompts": ["a"]}', 422, "query: missing field"),
    ("/get_reward", b'{"query": "a"}', 422, "query: expected an array, got string"),
    ("/get_reward", b'{"query": ["a", 3]}', 422, "query[1]: expected a string, got number"),
    ("/get_reward", b'{"query": ["a", ""]}', 422, "query[1]: empty text"),
    ("/get_reward", json.dumps({"query": ["a"] * 9}).encode(), 413, "9 items, more than this server's limit of 8"),
    ("/get_reward", json.dumps({"query": ["dog " * 80]}).encode(), 413, "tokens, more than this server's limit of 32 (--max-length)"),
    ("/score", b'{"prompts": ["a", "b"], "responses": ["x"]}', 422, "2 prompts but 1 responses"),
    ("/score", b'{"prompts": [5], "responses": ["x"]}', 422, "prompts[0]: expected a string or a list of {role, content}"),
    ("/score", b'{"prompts": ["a"], "responses": ["  "]}', 422, "responses[0]: empty response"),
    ("/score", b'{"prompts": ["a"], "responses": [["step", " "]]}', 422, "responses[0][1]: empty step"),
    ("/score", b'{"prompts": ["a"], "responses": ["x"], "per_token": "yes"}', 422, "per_token: expected true or false"),
    ("/score", b'{"prompts": ["a"], "responses": ["x"], "per_step": true}', 422, "per_step needs the response as a list"),
]


@pytest.mark.parametrize("path, raw, status, message", BAD, ids=[b[3][:32] for b in BAD])
def test_bad_requests_get_a_json_4xx_naming_the_problem_and_the_server_goes_on(tiny_rm, path, raw, status, message):
    app = create_app(tiny_rm, ServeConfig(max_items=8, max_length=32))
    good = {"query": [rendered(tiny_rm.tokenizer, PROMPTS[0], RESPONSES[0])]}

    async def body(client):
        bad = await client.post(path, content=raw, headers={"content-type": "application/json"})
        return bad, await client.post("/get_reward", json=good)

    bad, after = talk(app, body)
    assert bad.status_code == status and message in bad.json()["error"], bad.text
    assert after.status_code == 200 and len(after.json()["rewards"]) == 1


class Body:
    """A request body sent in ``size``-byte chunks, counting how many the server pulled."""

    def __init__(self, chunks: int, size: int = 100):
        self.chunks, self.size, self.sent = chunks, size, 0

    async def __aiter__(self):
        for _ in range(self.chunks):
            self.sent += 1
            yield b" " * self.size


def test_a_body_over_max_body_size_is_refused_with_413_before_it_is_read(tiny_rm):
    app = create_app(tiny_rm, ServeConfig(max_body_size=1000))
    good = {"query": [rendered(tiny_rm.tokenizer, PROMPTS[0], RESPONSES[0])]}
    declared, chunked = Body(500), Body(500)  # 50 kB each

    async def body(client):
        return [await client.post("/get_reward", content=declared, headers={"content-length": "50000"}),
                await client.post("/score", content=chunked),  # no Content-Length: chunked transfer
                await client.post("/get_reward", json=good),
                (await client.get("/metrics")).json()]

    by_length, by_stream, after, metrics = talk(app, body)
    assert by_length.status_code == 413 and declared.sent == 0  # refused on its Content-Length, unread
    assert by_length.json() == {"error": "request body: 50000 bytes, more than this server's limit of 1000 bytes (--max-body-size)"}
    assert by_stream.status_code == 413 and chunked.sent <= 11  # read up to the limit, then refused
    assert by_stream.json() == {"error": "request body: more than this server's limit of 1000 bytes (--max-body-size)"}
    assert after.status_code == 200 and metrics["errors"] == {"413": 2}


def test_a_body_of_exactly_max_body_size_is_served(tiny_rm):
    raw = json.dumps({"query": [rendered(tiny_rm.tokenizer, PROMPTS[0], RESPONSES[0])]}).encode()

    async def body(client):
        return await client.post("/get_reward", content=raw), (await client.get("/health")).json()

    answer, health = talk(create_app(tiny_rm, ServeConfig(max_body_size=len(raw))), body)
    assert answer.status_code == 200 and health["max_body_size"] == len(raw)
    health = talk(create_app(tiny_rm, ServeConfig()), lambda client: client.get("/health")).json()
    assert health["max_body_size"] == 8 * 2**20


def test_wrong_method_and_path_are_json_errors(tiny_rm):
    async def body(client):
        return await client.get("/get_reward"), await client.post("/nowhere", json={})

    method, path = talk(create_app(tiny_rm, ServeConfig()), body)
    assert (method.status_code, path.status_code) == (405, 404)
    assert method.json()["error"].startswith("Method Not Allowed") and "/nowhere" in path.json()["error"]


def test_a_failing_forward_is_a_json_500_and_the_next_request_works(tiny_rm, monkeypatch):
    original = tiny_rm.sequence_rewards
    calls = []

    def fail_once(seqs, batch_size):
        calls.append(len(seqs))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(seqs, batch_size)

    monkeypatch.setattr(tiny_rm, "sequence_rewards", fail_once)
    text = rendered(tiny_rm.tokenizer, PROMPTS[0], RESPONSES[0])

    async def body(client):
        return [await client.post("/get_reward", json={"query": [text]}) for _ in range(2)]

    first, second = talk(create_app(tiny_rm, ServeConfig()), body)
    assert first.status_code == 500 and "CUDA out of memory (simulated)" in first.json()["error"]
    assert second.status_code == 200


# -------------------------------------------------------------- the real server






def test_the_listening_socket_is_tcp_so_asyncio_disables_nagle():
    """asyncio sets TCP_NODELAY on accepted connections only for proto=IPPROTO_TCP listeners;
    without it every keep-alive answer waited ~40 ms for a delayed ACK."""
    from icrm.commands.serve import _listen

    with _listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0


def test_serve_refuses_a_busy_port_and_bad_options(tiny_rm, tmp_path, cli, monkeypatch):
    checkpoint = tmp_path / "rm"
    monkeypatch.setattr(tiny_rm, "reward_stats", {})  # no statistics: --normalize must be refused
    tiny_rm.save_pretrained(checkpoint)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = cli("serve", "--model", checkpoint, "--port", port)
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    result = cli("serve", "--model", checkpoint, "--max-batch-size", "0")
    assert result.exit_code == 2 and "--max-batch-size must be at least 1" in result.stderr
    result = cli("serve", "--model", checkpoint, "--max-body-size", "0")
    assert result.exit_code == 2 and "--max-body-size must be at least 1 byte" in result.stderr
    result = cli("serve", "--model", checkpoint, "--max-length", "5000")
    assert result.exit_code == 2 and "exceeds the model's position limit of 2048 tokens" in result.stderr
    result = cli("serve", "--model", checkpoint, "--normalize")
    assert result.exit_code == 2 and "--normalize needs reward statistics" in result.stderr
