"""The served OpenAPI schema says what the server does (issue 13, item 11).

A client generated from `/openapi.json` must meet the server it describes: bad
requests are 400 with OpenAI's error body (never FastAPI's 422), `/metrics` is
Prometheus text, and a body the schema calls valid or invalid is one the server
accepts or refuses. Checked on real responses over a socket, case by case, and
by a bounded schemathesis run over every operation (marked slow).
"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.router import app_fixtures

router_factory = app_fixtures.router_factory

USER = [{"role": "user", "content": "hi"}]
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    # `$ref`s point into the document's components: resolve them from the root.
    return Draft202012Validator({**schema, "components": spec["components"]})


def _body_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_errors_are_documented_as_400_with_the_error_body_not_422(router_factory: Any
                                                                   ) -> None:
    server = router_factory()
    spec = server.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path in ("/v1/route", "/v1/chat/completions", "/v1/feedback"):
        responses = spec["paths"][path]["post"]["responses"]
        for status in ("400", "default"):
            assert responses[status]["content"]["application/json"]["schema"] == error_ref
    # What the server answers a bad body is what the schema says it answers.
    r = server.client.post("/v1/chat/completions", json={"model": "router", "messages": []})
    assert r.status_code == 400
    _validator(spec, error_ref).validate(r.json())


def test_metrics_are_documented_and_served_as_text(router_factory: Any) -> None:
    server = router_factory()
    spec = server.client.get("/openapi.json").json()
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"] and content["text/plain"]["schema"]["type"] == \
        "string"
    r = server.client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert "router_requests_total" in r.text


def test_readiness_documents_both_answers(router_factory: Any, tmp_path: Any) -> None:
    server = router_factory()
    responses = server.client.get("/openapi.json").json()["paths"]["/readyz"]["get"][
        "responses"]
    assert set(responses) == {"200", "503"}
    assert server.client.get("/readyz").status_code == 200
    # An empty registry, no model to serve: the documented 503.
    (tmp_path / "empty").mkdir()
    empty = router_factory(registry_dir=str(tmp_path / "empty"))
    assert empty.client.get("/readyz").status_code == 503


@pytest.mark.parametrize(("path", "body", "valid"), [
    ("/v1/chat/completions", {"model": "router", "messages": USER}, True),
    ("/v1/chat/completions", {"model": "", "messages": []}, False),
    ("/v1/chat/completions", {"model": "router", "messages": []}, False),
    ("/v1/chat/completions", {"model": "", "messages": USER}, False),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "temperature": "hot"},
     False),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "max_tokens": -5}, False),
    ("/v1/chat/completions", {"model": "router", "messages": USER, "stream": "yes"}, False),
    ("/v1/chat/completions", {"model": "router", "messages": [{"role": "user"}]}, False),
    ("/v1/chat/completions",
     {"model": "router", "messages": [{"role": "user", "content": " "}]}, False),
    ("/v1/chat/completions",
     {"model": "router", "messages": [{"role": "assistant", "content": None}]}, False),
    ("/v1/chat/completions",
     {"model": "gpt-4o", "messages": [*USER, {"role": "assistant", "content": None,
                                              "tool_calls": [TOOL_CALL]},
                                      {"role": "tool", "tool_call_id": "call_1",
                                       "content": "42"}]}, True),
    ("/v1/chat/completions",
     {"model": "router", "messages": [{"role": "user", "content": [
         {"type": "text", "text": "see"}, {"type": "image_url",
                                           "image_url": {"url": "data:,"}}]}]}, True),
    ("/v1/chat/completions",
     {"model": "router", "messages": USER, "temperature": 0.2, "vendor_field": [1]}, True),
    ("/v1/route", {"messages": "hi"}, True),
    ("/v1/route", {"messages": ""}, False),
    ("/v1/route", {"messages": USER, "max_cost_usd": 0}, False),
    ("/v1/route", {"messages": USER, "temperature": 0}, False),
    ("/v1/feedback", {"request_id": "", "thumbs": "up"}, False),
    ("/v1/feedback", {"request_id": "r" * 129, "thumbs": "up"}, False),
])
def test_schema_and_server_agree_on_what_is_a_valid_body(
        router_factory: Any, path: str, body: dict[str, Any], valid: bool) -> None:
    server = router_factory()
    spec = server.client.get("/openapi.json").json()
    assert _validator(spec, _body_schema(spec, path)).is_valid(body) is valid
    r = server.client.post(path, json=body)
    assert (r.status_code == 400) is not valid, r.text
    if r.status_code >= 400:
        error = spec["paths"][path]["post"]["responses"]["400"]["content"][
            "application/json"]["schema"]
        _validator(spec, error).validate(r.json())


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(router_factory: Any
                                                                    ) -> None:
    """Every operation with generated data: no 5xx, every status, content type and
    body as documented. On the routing endpoints, also: a body the schema calls
    valid is never a 400 (except for `models` names the catalog does not have, a
    fact of the deployment the schema cannot state), and one it calls invalid is
    always refused (4xx). Bounded: 40 examples per operation and mode."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode, checks

    # A model that predicts latency: a limit the schema allows is then one it can apply.
    server = router_factory(model=app_fixtures.StubModel(latency=(400, 900, 1500, 2500)))
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    routing = {"/v1/route", "/v1/chat/completions"}

    def check(case: Any, mode: Any) -> None:
        response = case.call(base_url=server.url)
        case.validate_response(response, checks=[
            checks.not_a_server_error, checks.status_code_conformance,
            checks.content_type_conformance, checks.response_schema_conformance])
        if case.operation.path not in routing:
            return
        if mode is GenerationMode.POSITIVE:
            assert response.status_code != 400 or \
                response.json()["error"]["param"] == "models", response.text
        else:
            assert 400 <= response.status_code < 500, response.text

    def fuzz(operation: Any, mode: Any) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            check(case, mode)

        run()

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
                continue  # nothing to get wrong in a GET without parameters
            fuzz(operation, mode)
