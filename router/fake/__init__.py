"""The simulated OpenAI-compatible provider: tests, `router simulate` and the quickstart call it.

`create_fake_upstream(...)` is the app (see `router.fake._server`), answering
from recorded outcome tables (`load_outcome_table`: quality, answer length and,
scaled, latency) with per-model behaviour changeable at run time
(`FakeUpstreamState`: failures, latency, a slowdown); `serve_in_thread` and
`graceful_server` run it, or the router, on a loopback socket.
"""

from router.fake._answers import (
    load_outcome_table,
)
from router.fake._server import (
    FakeUpstreamState,
    create_fake_upstream,
)
from router.fake._threaded import (
    bind_socket,
    graceful_server,
    serve_in_thread,
)

__all__ = [
    "FakeUpstreamState",
    "bind_socket",
    "create_fake_upstream",
    "graceful_server",
    "load_outcome_table",
    "serve_in_thread",
]
