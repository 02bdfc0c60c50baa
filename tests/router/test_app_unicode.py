"""Text that is not valid Unicode (a lone surrogate from a JSON escape) is a 400
naming the field on every endpoint, never a 500, and the connection stays usable."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.router import app_fixtures

router_factory = app_fixtures.router_factory

# Raw JSON: `json.dumps` would refuse to write a lone surrogate, a client need not.
BAD = '"x\\ud800y"'
EMOJI = '"smile \\ud83d\\ude00"'  # a valid pair: one code point, must be accepted


# TEXT stands for the JSON string under test.
MESSAGES = '[{"role":"user","content":TEXT}]'
CASES = [
    ("/v1/route", '{"messages":MESSAGES}', "messages"),
    ("/v1/route", '{"messages":TEXT}', "messages"),  # a bare prompt
    ("/v1/chat/completions", '{"model":"router","messages":MESSAGES}', "messages.0.content"),
    ("/v1/chat/completions", '{"model":"router","stream":true,"messages":MESSAGES}',
     "messages.0.content"),
    ("/v1/chat/completions", '{"model":"gpt-4o","messages":MESSAGES}', "messages.0.content"),
    ("/v1/chat/completions", '{"model":"gpt-4o","user":TEXT,"messages":[{"role":"user",'
                             '"content":"hi"}]}', "user"),
]


def _body(template: str, text: str) -> str:
    return template.replace("MESSAGES", MESSAGES).replace("TEXT", text)


def _post(conn: http.client.HTTPConnection, path: str, body: str) -> tuple[int, Any]:
    conn.request("POST", path, body=body.encode("ascii"),
                 headers={"content-type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    return response.status, data


@pytest.mark.parametrize(("path", "body", "param"), CASES)
def test_a_lone_surrogate_is_a_400_naming_the_field_and_keeps_the_connection(
        router_factory: Any, fake_upstream_server: Any, path: str, body: str,
        param: str) -> None:
    _, control = fake_upstream_server
    server = router_factory()
    address = urlsplit(server.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        status, data = _post(conn, path, _body(body, BAD))
        assert status == 400, data
        error = json.loads(data)["error"]
        assert error["param"] == param
        assert "lone surrogate (U+D800)" in error["message"]
        assert error["type"] == "invalid_request_error"
        sock = conn.sock
        assert sock is not None  # the server did not close the connection
        # The same keep-alive connection answers the next request.
        status, data = _post(conn, path, _body(body, EMOJI))
        assert status == 200, data
        assert conn.sock is sock
    finally:
        conn.close()
    if path.endswith("completions"):  # only the valid request went upstream
        assert len(control.requests) == 1
