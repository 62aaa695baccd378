"""``icrm serve``: the reward server for online RL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..serve import ServeConfig
from .app import ConfigOption, command, print_summary
from .options import PickleOpt, TrustOpt, settings_options


@command("serve")
@settings_options(settings=ServeConfig)
def serve_cmd(
    *,
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: all interfaces, no auth)."),
    port: int = typer.Option(5000, "--port", help="Port (0: any free port; the URL is printed)."),
    settings: ServeConfig,
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

    serve(model, host, port, settings, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, on_ready=ready)
    print_summary({"stopped": model})
