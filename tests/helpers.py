"""Helpers the tests import (fixtures live in conftest.py): the shipped data, the CLI executable, file writing."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def _find_shared_data() -> Path:
    """The real data shipped beside the repository (``../shared/data``), or $ICRM_SHARED_DATA."""
    if os.environ.get("ICRM_SHARED_DATA"):
        return Path(os.environ["ICRM_SHARED_DATA"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "shared" / "data" / "hh-rlhf").is_dir():
            return parent / "shared" / "data"
    return here.parents[2] / "shared" / "data"


SHARED = _find_shared_data()
HH_FILE = SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"
GSM8K_SOLUTIONS = SHARED / "gsm8k" / "example_model_solutions.jsonl.gz"

# The installed ``icrm`` executable, for tests that run the CLI as a user does (a real subprocess).
ICRM_BIN = shutil.which("icrm") or str(Path(sys.executable).with_name("icrm"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_process(args: list[str], env: dict, **kw):
    """Run a command to its end, its output captured as text."""
    import subprocess

    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, **kw)


# Prompts of both kinds (text and conversations, one with a system turn) and responses, as the server tests send them.
PROMPTS = [
    "hello world, how are you today?",
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the quick brown fox"}],
    "how are you?",
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}, {"role": "user", "content": "fox?"}],
]
RESPONSES = ["the lazy dog jumps", "quick brown fox jumps over", "hello hello world", "the dog today"]


def rendered(tokenizer, prompt, response) -> str:
    """The text a chat template makes of one prompt and response, as a client of ``/get_reward`` sends it."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)


# The Python API tests' rows: TRL's dataset formats (https://huggingface.co/docs/trl/dataset_formats).
QA = [("What color is the sky?", "Blue, mostly.", "Green."), ("Where is the sun?", "In the sky.", "Under the sea."),
      ("How many legs has a dog?", "Four.", "Seven.")]
ROWS = QA * 2  # 6 rows: two batches of 4 (the second short)


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


# TRL's dataset formats (https://huggingface.co/docs/trl/dataset_formats), as the rows of a datasets.Dataset
FORMATS = {
    "standard": [{"prompt": q, "chosen": c, "rejected": r, "margin": 0.5} for q, c, r in ROWS],
    "conversational": [{"prompt": user(q), "chosen": assistant(c), "rejected": assistant(r)} for q, c, r in ROWS],
    "implicit prompt": [{"chosen": user(q) + assistant(c), "rejected": user(q) + assistant(r)} for q, c, r in ROWS],
    "implicit prompt, standard": [{"chosen": f"{q} {c}", "rejected": f"{q} {r}"} for q, c, r in ROWS],
    "unpaired": [{"prompt": q, "completion": text, "label": label} for q, c, r in ROWS
                 for text, label in ((c, True), (r, False))],
}


def config(tmp_path, **options):
    """An ``ICRMConfig`` of a few CPU steps; everything else TRL's (and icrm's) defaults."""
    from icrm import ICRMConfig

    return ICRMConfig(**{"output_dir": str(tmp_path / "out"), "use_cpu": True, "max_steps": 2,
                         "per_device_train_batch_size": 4, **options})


def hf_score(directory, prompt_messages, response) -> float:
    """Score the way a plain transformers / RewardBench user would."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    text = tok.apply_chat_template(prompt_messages + [{"role": "assistant", "content": response}], tokenize=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits[0, 0].item()


def talk(app, body):
    """Run ``body(client)`` against the app, with its lifespan (startup and shutdown)."""

    import asyncio

    import httpx

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://icrm", timeout=60) as client:
                return await body(client)

    return asyncio.run(main())


def post(app, path, payload):
    """POST ``payload`` as JSON to ``path`` of the app; the response."""

    async def body(client):
        return await client.post(path, json=payload)

    return talk(app, body)


def sft_embedding_grad(rm, batch, scale: float):
    """Gradient of the SFT term alone on the input embeddings, the backbone's share scaled by ``scale``."""
    import torch

    positions = torch.zeros_like(batch["response_mask"])
    positions[:, :-1] = batch["response_mask"][:, 1:]
    rm.zero_grad()
    _, _, sft = rm(batch["input_ids"], batch["attention_mask"], lm_positions=positions, lm_grad_scale=scale)
    sft.backward()
    return rm.decoder.get_input_embeddings().weight.grad.clone()
