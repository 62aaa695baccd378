"""``icrm convert``: a GGUF model as a plain transformers folder, then the runner in ``icrm.commands``."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import command, print_summary
from .options import OverwriteOpt


@command("convert")
def convert_cmd(
    model: str = typer.Option(..., "--model", "-m", help="A .gguf file or a GGUF preset (smollm2-135m)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the model (safetensors, config, tokenizer)."),
    overwrite: bool = OverwriteOpt,
):
    """Write a GGUF model as a plain model folder.

    Float32 safetensors, config and tokenizer. Every --model already takes a GGUF model (converted once
    into icrm's cache); this puts the folder where you ask.
    """
    from ..commands.convert import convert_model

    print_summary(convert_model(model, output, overwrite))
