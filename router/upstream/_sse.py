"""Server-sent events as OpenAI streams them: framing, parsing, and the error event.

OpenAI-compatible providers send `data: <json>\\n\\n` events and end with
`data: [DONE]`. Network reads cut bytes anywhere, so `SSEDecoder` re-frames them
into whole events: the router only ever forwards complete events, and a client
never sees half a JSON object when a provider fails mid-stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SSEEvent", "SSEDecoder", "encode_data", "DONE", "error_event"]

DONE = b"data: [DONE]\n\n"


def encode_data(payload: Any) -> bytes:
    """One `data:` event holding `payload` as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def error_event(message: str, *, type: str = "upstream_error", code: str | None = None,
                status: int | None = None) -> bytes:
    """The event that ends a stream that failed after it started (then send `DONE`).

    Shaped like OpenAI's error body, which is what the OpenAI SDKs raise from
    when they meet an `error` key inside a stream.
    """
    error: dict[str, Any] = {"message": message, "type": type, "param": None, "code": code}
    if status is not None:
        error["status"] = status
    return encode_data({"error": error})


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One complete event: its bytes as received (re-terminated) and its data field."""

    raw: bytes
    data: str | None

    @property
    def is_done(self) -> bool:
        return self.data is not None and self.data.strip() == "[DONE]"

    def json(self) -> Any:
        """The data field parsed as JSON, or None for `[DONE]`, comments and bad JSON."""
        if self.data is None or self.is_done:
            return None
        try:
            return json.loads(self.data)
        except ValueError:
            return None


class SSEDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole events back."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        # Normalise CRLF so a provider on either convention frames the same way.
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return
            block, self._buffer = self._buffer[:end], self._buffer[end + 2:]
            if block.strip():
                yield _parse_block(block)

    def flush(self) -> Iterator[SSEEvent]:
        """Whatever is left when the stream ends without a final blank line."""
        block, self._buffer = self._buffer, b""
        if block.strip():
            yield _parse_block(block)

    @property
    def pending(self) -> bytes:
        return self._buffer


def _parse_block(block: bytes) -> SSEEvent:
    data_lines = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
    data = b"\n".join(data_lines).decode("utf-8", errors="replace") if data_lines else None
    return SSEEvent(raw=block + b"\n\n", data=data)
