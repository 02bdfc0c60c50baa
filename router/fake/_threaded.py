"""Listening sockets for uvicorn, and an ASGI app served in a background thread.

`bind_socket` is how every server of this project binds (`router serve`,
`router fake-upstream`, `serve_in_thread`): before uvicorn does, so a busy port
is one clear error, not a traceback.

For in-process integration work over a real socket: the closed-loop simulation
(`router simulate`) runs the fake provider and the router this way, and tests
can too. Not for production serving (`router serve` owns the main thread and
its signals).

The socket is bound here, before uvicorn starts, with port 0, so the kernel
picks a free port and there is no race between "find a port" and "bind it". It
is created with `IPPROTO_TCP` (by `bind_socket`) because asyncio only sets `TCP_NODELAY` on sockets
that say so; without it every small response waits ~40 ms on Nagle + delayed ACK.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from router.errors import ConfigError, RouterError

__all__ = ["bind_socket", "serve_in_thread", "graceful_server"]


def graceful_server(config: Any, on_deadline: Callable[[], Any] | None = None) -> Any:
    """A `uvicorn.Server` for `config` that calls `on_deadline()` shortly before its
    graceful-shutdown period (`config.timeout_graceful_shutdown`) runs out.

    Why: when the period is over uvicorn cancels the requests still running, so a
    long stream ends without a word to its client and its log row races the app's
    shutdown. The hook (the router's `AppContext.cut_streams`) lets the app end
    them itself first, 1 s before (half the period if shorter), with an error event.
    """
    import uvicorn  # heavy; only when a server is actually started

    class _GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            grace = self.config.timeout_graceful_shutdown
            timer = None
            if on_deadline is not None and grace is not None:
                timer = asyncio.get_running_loop().call_later(
                    max(0.0, grace - min(1.0, grace / 2)), on_deadline)
            try:
                await super().shutdown(sockets)
            finally:
                if timer is not None:
                    timer.cancel()

    return _GracefulServer(config)


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port); port 0 lets the kernel pick a free one.

    `reuse_port`: several processes each bind and listen on the same port
    (`SO_REUSEPORT`), and the kernel spreads new connections evenly over them
    (`router serve --workers N`). Raises `ConfigError` naming the address when
    the port is taken or the host cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that
    # say so, and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use",
                              hint="pick another --port, or stop the process listening "
                                   "there") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                          hint="check --host and --port") from None
    return sock


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", lifespan: str = "on",
                    log_level: str = "warning", name: str = "server",
                    start_timeout_s: float = 20.0, stop_timeout_s: float = 30.0,
                    shutdown_grace_s: float | None = None,
                    on_deadline: Callable[[], Any] | None = None) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL `http://host:port`.

    `lifespan="on"` runs the app's start-up and shutdown (the router's outcome
    log is flushed on the way out); use "off" for apps that have none. Raises
    `RouterError` when the server does not come up within `start_timeout_s`
    (a failing lifespan, say); the error names the address. `shutdown_grace_s`
    and `on_deadline` are as in `router serve` (see `graceful_server`); by
    default the stop waits for running requests (up to `stop_timeout_s`).
    """
    import uvicorn  # heavy; only when a server is actually started

    sock = bind_socket(host, 0)
    port = sock.getsockname()[1]
    server = graceful_server(uvicorn.Config(app, log_level=log_level, lifespan=lifespan,
                                            access_log=False,
                                            timeout_graceful_shutdown=shutdown_grace_s),
                             on_deadline)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name=f"{name}-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RouterError(f"{name} did not start on {host}:{port}",
                                  hint="see the log above for the start-up error")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout_s)
        sock.close()
