"""``icrm serve``: load a reward model and serve it over HTTP until stopped (the app is ``icrm.serve``)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable

from ..errors import UserError
from ..serve import ServeConfig, create_app


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (bound here, so a busy port is a clean error and port 0 works).

    Created with ``proto=IPPROTO_TCP``, as asyncio's own servers are: asyncio
    sets TCP_NODELAY on accepted connections only then, and without it every
    keep-alive response waits about 40 ms for a delayed ACK.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             proto=socket.IPPROTO_TCP)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err})") from err


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    config: ServeConfig | None = None,
    *,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Load ``model`` and serve it until SIGINT/SIGTERM (then finish what is in flight, return).

    ``port=0`` takes any free port; ``on_ready`` gets the URL once the socket
    listens. The model runs on the GPU when there is one.
    """
    import torch
    import uvicorn

    from ..evaluation import load_reward_model

    config = config or ServeConfig()
    config.validate()
    rm = load_reward_model(model, trust_remote_code, allow_pickle)
    if torch.cuda.is_available():
        rm.to("cuda")
    app = create_app(rm, config, model)
    sock = _listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn restores these after its own graceful shutdown and re-raises the signal
        # into them: a stop by signal then ends here, normally, instead of killing the process.
        def stop(signum, frame):
            server.should_exit = True

        handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        if on_ready is not None:
            on_ready(f"http://{url_host}:{bound_port}")
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
