"""``icrm convert``: write a GGUF model (a ``.gguf`` file or an offline preset) as a normal model folder.

Every command already takes a GGUF model as ``--model`` through the cache; this
puts the same folder (float32 safetensors, config, tokenizer with its chat
template) where the user asks, for tools that read a plain transformers folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError
from ..modeling import gguf_file, resolve_model
from ..outputs import check_output, staged_directory


def convert_model(model: str, output: str | Path, overwrite: bool = False, cache_dir: str | None = None) -> dict:
    """Copy the converted folder of GGUF ``model`` into ``output`` (all or nothing); return what was written."""
    check_output(output, "convert", overwrite)
    if gguf_file(model) is None:
        raise UserError(f"--model {model}: not a .gguf file or a GGUF preset; only GGUF models need converting")
    converted = Path(resolve_model(model, cache_dir))
    files = sorted(p.name for p in converted.iterdir() if not p.name.startswith("."))  # not the cache's marker
    with staged_directory(output, "convert", overwrite) as staging:
        for name in files:
            shutil.copyfile(converted / name, staging / name)
    return {"model": model, "files": files, "output": str(Path(output).absolute())}
