"""``icrm serve``: the reward server for online RL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..serve import ServeConfig
from .app import ConfigOption, app, guarded, print_summary
from .options import PickleOpt, TrustOpt, option


@app.command("serve")
@guarded
def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: all interfaces, no auth)."),
    port: int = typer.Option(5000, "--port", help="Port (0: any free port; the URL is printed)."),
    max_batch_size: Optional[int] = option(ServeConfig, "max_batch_size"),
    max_wait_ms: float = option(ServeConfig, "max_wait_ms"),
    max_length: Optional[int] = option(ServeConfig, "max_length"),
    max_items: int = option(ServeConfig, "max_items"),
    max_body_size: Optional[int] = option(ServeConfig, "max_body_size"),
    normalize: bool = option(ServeConfig, "normalize"),
    packing: Optional[bool] = option(ServeConfig, "packing", "--packing/--no-packing"),
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    config: Optional[Path] = ConfigOption,
):
    """Serve rewards over HTTP (OpenRLHF's /get_reward).

    Endpoints: /get_reward, /score, /health, /metrics.
    """
    from ..commands.serve import serve

    def ready(url: str) -> None:
        print_summary({"model": model, "url": url, "get_reward": f"{url}/get_reward"})
        sys.stdout.flush()

    settings = ServeConfig(max_batch_size, max_wait_ms, max_length, max_items, normalize, packing, max_body_size)
    serve(model, host, port, settings, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, on_ready=ready)
    print_summary({"stopped": model})
