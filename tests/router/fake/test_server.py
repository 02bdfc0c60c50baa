"""The fake upstream: what a client of a simulated provider sees on the wire.

Most tests talk to the app in-process (`httpx.ASGITransport`); the mid-stream
crash and the CLI go over a real socket because they are about connections.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from router.catalog import Catalog, ModelSpec, estimate_tokens
from router.cli import main as cli_main
from router.errors import DataError, RouterError
from router.fake import create_fake_upstream, load_outcome_table

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "upstream"
HI = [{"role": "user", "content": "hi"}]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def client_for(**options: Any) -> httpx.AsyncClient:
    app = create_fake_upstream(**options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake")


async def chat(client: httpx.AsyncClient, model: str = "m", messages: Any = None,
               **extra: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions",
                             json={"model": model, "messages": messages or HI, **extra})


def events(body: bytes) -> list[Any]:
    """The data fields of an SSE body: parsed JSON, or the string '[DONE]'."""
    out = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# ---------------------------------------------------------------- answers


async def test_answers_are_deterministic_per_prompt_and_model():
    async with client_for() as a, client_for() as b:
        first, again = (await chat(a, "m1")).json(), (await chat(b, "m1")).json()
        other = (await chat(a, "m2")).json()
    assert first == again
    text = first["choices"][0]["message"]["content"]
    assert text.startswith("m1:")
    assert text != other["choices"][0]["message"]["content"]
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["finish_reason"] == "stop"


async def test_usage_counts_prompt_and_answer_tokens():
    async with client_for() as client:
        body = (await chat(client)).json()
    text = body["choices"][0]["message"]["content"]
    assert body["usage"] == {"prompt_tokens": estimate_tokens("hi") + 4,
                             "completion_tokens": estimate_tokens(text),
                             "total_tokens": estimate_tokens("hi") + 4 + estimate_tokens(text)}
    assert 16 <= body["usage"]["completion_tokens"] <= 64


async def test_max_tokens_caps_the_answer():
    async with client_for() as client:
        body = (await chat(client, max_tokens=5)).json()
    assert body["usage"]["completion_tokens"] == 5
    assert len(body["choices"][0]["message"]["content"]) == 20


async def test_stream_is_openai_chunks_with_done_and_optional_usage():
    async with client_for() as client:
        plain = (await chat(client)).json()
        with_usage = await chat(client, stream=True, stream_options={"include_usage": True})
        without = await chat(client, stream=True)
    assert with_usage.headers["content-type"].startswith("text/event-stream")
    got = events(with_usage.content)
    assert got[-1] == "[DONE]"
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" for e in got[:-1])
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in got[:-1] if e["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert got[-3]["choices"][0]["finish_reason"] == "stop"
    assert got[-2]["choices"] == [] and got[-2]["usage"] == plain["usage"]
    assert all(e["usage"] is None for e in got[:-2])

    plain_events = events(without.content)
    assert plain_events[-1] == "[DONE]"
    assert all("usage" not in e for e in plain_events[:-1])
    assert len(plain_events) == len(got) - 1


# ---------------------------------------------------------------- failures


async def test_fail_models_always_answer_503_with_retry_after():
    async with client_for(fail_models=["down"]) as client:
        down, up = await chat(client, "down"), await chat(client, "up")
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    assert down.json()["error"]["type"] == "server_error"
    assert up.status_code == 200


async def test_fail_status_is_configurable():
    async with client_for(fail_models=["m"], fail_status=500) as client:
        assert (await chat(client, "m")).status_code == 500


async def test_error_rate_is_seeded_and_reproducible():
    async def statuses(seed: int) -> list[int]:
        async with client_for(error_rate=0.5, seed=seed) as client:
            return [(await chat(client)).status_code for _ in range(40)]

    first, again, other = await statuses(7), await statuses(7), await statuses(8)
    assert first == again
    assert first != other
    assert 10 <= sum(s != 200 for s in first) <= 30
    assert set(first) <= {200, 429, 500, 502, 503}
    assert 429 in first


async def test_rate_limit_carries_retry_after_and_openai_code():
    async with client_for(error_rate=1.0, retry_after_s=2.5, seed=3) as client:
        responses = [await chat(client) for _ in range(12)]
    limited = [r for r in responses if r.status_code == 429]
    assert limited
    assert limited[0].headers["retry-after"] == "2.5"
    assert limited[0].json()["error"]["code"] == "rate_limit_exceeded"


async def test_prompt_over_the_catalog_window_is_a_context_length_error():
    catalog = Catalog({"tiny": ModelSpec("tiny", 1, 1, context_tokens=10)})
    long = [{"role": "user", "content": "x" * 100}]
    async with client_for(catalog=catalog) as client:
        too_long, fine = await chat(client, "tiny", long), await chat(client, "tiny")
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert "maximum context length is 10 tokens" in error["message"]
    assert "resulted in 29 tokens" in error["message"]
    assert fine.status_code == 200


async def test_api_key_is_checked_when_configured():
    async with client_for(api_key="sk-fake") as client:
        missing = await chat(client)
        right = await client.post("/v1/chat/completions", json={"model": "m", "messages": HI},
                                  headers={"Authorization": "Bearer sk-fake"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200


async def test_bad_requests_get_openai_shaped_400s():
    async with client_for() as client:
        no_model = await client.post("/v1/chat/completions", json={"messages": HI})
        bad_messages = await chat(client, messages=[{"role": "robot", "content": "x"}])
        not_json = await client.post("/v1/chat/completions", content=b"{",
                                     headers={"content-type": "application/json"})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    assert bad_messages.status_code == 400
    assert "robot" in bad_messages.json()["error"]["message"]
    assert not_json.status_code == 400


def test_error_rate_outside_unit_interval_is_refused():
    with pytest.raises(RouterError, match=r"error_rate must be in \[0, 1\], got 1.5"):
        create_fake_upstream(error_rate=1.5)


# ---------------------------------------------------------------- run-time control


async def test_control_changes_behaviour_without_restart_and_reset_restores():
    async with client_for() as client:
        assert (await chat(client, "m")).status_code == 200
        changed = await client.post("/_control", json={"model": "m", "fail_status": 502})
        assert changed.json()["models"]["m"]["fail_status"] == 502
        assert (await chat(client, "m")).status_code == 502
        assert (await chat(client, "other")).status_code == 200
        await client.post("/_control", json={"reset": True})
        assert (await chat(client, "m")).status_code == 200
        snapshot = (await client.get("/_control")).json()
    assert snapshot["models"] == {} and snapshot["requests"] == 1


async def test_control_fail_next_fails_n_requests_then_recovers():
    async with client_for() as client:
        await client.post("/_control", json={"model": "m", "fail_next": 2, "retry_after_s": 3})
        statuses = [(await chat(client, "m")).status_code for _ in range(3)]
        first = await chat(client, "x")
    assert statuses == [429, 429, 200]
    assert first.status_code == 200


async def test_control_rejects_unknown_fields_naming_the_known_ones():
    async with client_for() as client:
        response = await client.post("/_control", json={"model": "m", "fail_staus": 500})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "unknown behaviour field(s): fail_staus" in message
    assert "fail_status" in message


async def test_control_latency_delays_the_answer():
    async with client_for() as client:
        await client.post("/_control", json={"latency_ms": 60})
        started = time.perf_counter()
        await chat(client)
        assert time.perf_counter() - started >= 0.06


async def test_control_context_window_without_a_catalog():
    async with client_for() as client:
        await client.post("/_control", json={"model": "m", "context_tokens": 3})
        response = await chat(client, "m", FRANCE)
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_mid_stream_crash_drops_the_connection_after_n_chunks(fake_upstream_server):
    base_url, control = fake_upstream_server
    control.configure("m", stream_fail_after=3)
    received = []
    with httpx.Client(timeout=5) as http, pytest.raises(httpx.RemoteProtocolError), \
            http.stream("POST", base_url + "/chat/completions",
                        json={"model": "m", "messages": HI, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line)
    assert len(received) == 1 + 3  # the role chunk, then three content chunks
    assert "[DONE]" not in "".join(received)


# ---------------------------------------------------------------- outcome table


async def test_outcomes_give_recorded_quality_and_output_tokens():
    async with client_for(outcomes=FIXTURES / "outcomes.csv") as client:
        cheap, strong = await chat(client, "cheap", FRANCE), await chat(client, "strong", FRANCE)
        no_tokens = await chat(client, "cheap",
                               [{"role": "user", "content": "Prove that sqrt(2) is irrational."}])
        unknown = await chat(client, "cheap", HI)
    assert cheap.json()["router_quality"] == 0.25
    assert cheap.headers["x-fake-quality"] == "0.25"
    assert cheap.json()["usage"]["completion_tokens"] == 12
    assert strong.json()["router_quality"] == 1.0
    assert strong.json()["usage"]["completion_tokens"] == 30
    assert no_tokens.json()["router_quality"] == 0.0
    assert 16 <= no_tokens.json()["usage"]["completion_tokens"] <= 64
    assert 0.0 <= unknown.json()["router_quality"] <= 1.0


async def test_outcomes_quality_also_in_the_stream_usage_chunk():
    async with client_for(outcomes=FIXTURES / "outcomes.csv") as client:
        response = await chat(client, "strong", FRANCE, stream=True,
                              stream_options={"include_usage": True})
    got = events(response.content)
    assert response.headers["x-fake-quality"] == "1"
    assert got[-2]["router_quality"] == 1.0
    assert got[-2]["usage"]["completion_tokens"] == 30


async def test_degradation_lowers_the_recorded_quality():
    async with client_for(outcomes=FIXTURES / "outcomes.csv") as client:
        await client.post("/_control", json={"model": "strong", "degradation": 0.3})
        strong = await chat(client, "strong", FRANCE)
        cheap = await chat(client, "cheap", FRANCE)
    assert strong.json()["router_quality"] == pytest.approx(0.7)
    assert cheap.json()["router_quality"] == 0.25


async def test_outcomes_with_messages_column_match_chat_requests():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a prime."}]
    async with client_for(outcomes=FIXTURES / "outcomes.jsonl") as client:
        body = (await chat(client, "cheap", messages)).json()
    assert body["router_quality"] == 0.5
    assert body["usage"]["completion_tokens"] == 3


async def test_judge_mode_answers_a_rating_from_the_quality():
    async with client_for(outcomes=FIXTURES / "outcomes.csv", judge_models=["strong"]) as client:
        body = (await chat(client, "strong", FRANCE)).json()
    assert body["choices"][0]["message"]["content"] == "Rating: [[10]]"
    async with client_for(judge_models=["judge"]) as client:
        body = (await chat(client, "judge")).json()
    rating = int(re.fullmatch(r"Rating: \[\[(\d+)\]\]",
                              body["choices"][0]["message"]["content"]).group(1))
    assert rating == 1 + round(9 * body["router_quality"])


@pytest.mark.parametrize("scale", [10, 5])
async def test_judge_grading_a_fake_answer_recovers_its_recorded_quality(scale):
    async with client_for(outcomes=FIXTURES / "outcomes.csv", judge_models=["judge"],
                          judge_scale=scale) as client:
        ratings = {}
        for model in ("cheap", "strong"):
            answer = (await chat(client, model, FRANCE)).json()
            text = answer["choices"][0]["message"]["content"]
            judged = await chat(client, "judge", [
                {"role": "system", "content": "Rate the answer 1-N. Rating: [[N]]"},
                {"role": "user", "content": f"[Question]\n{FRANCE[0]['content']}\n"
                                            f"[Answer]\n{text}\n[End of answer]"}])
            ratings[model] = judged.json()["choices"][0]["message"]["content"]
    # cheap was recorded at 0.25, strong at 1.0
    assert ratings == {"cheap": f"Rating: [[{1 + round((scale - 1) * 0.25)}]]",
                       "strong": f"Rating: [[{scale}]]"}


async def test_models_list_has_catalog_and_outcome_models():
    catalog = Catalog({"gpt-x": ModelSpec("gpt-x", 1, 1)})
    async with client_for(catalog=catalog, outcomes=FIXTURES / "outcomes.csv") as client:
        listing = (await client.get("/v1/models")).json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["gpt-x", "cheap", "strong"]


@pytest.mark.parametrize(("content", "message"), [
    ("prompt_id,prompt,model\np,x,m\n",
     "missing required column(s) quality; the file has prompt_id, prompt, model"),
    ("prompt_id,prompt,model,quality\np,x,m,0.5\np,y,m,1.5\n",
     "row 2: quality is 1.5, outside [0, 1]"),
    ("prompt_id,messages,model,quality\np,[{,m,0.5\n",
     "row 1: messages is not valid JSON"),
    ("", "file is empty"),
])
def test_bad_outcome_tables_name_file_row_and_problem(tmp_path, content, message):
    path = tmp_path / "outcomes.csv"
    path.write_text(content)
    with pytest.raises(DataError) as caught:
        load_outcome_table(path)
    assert caught.value.message.startswith(str(path))
    assert message in caught.value.message


def test_missing_outcome_table_says_so():
    with pytest.raises(DataError, match="^/nope.csv: file not found"):
        create_fake_upstream(outcomes="/nope.csv")


async def test_every_table_router_train_reads_is_answered_from(tmp_path):
    """The demo data: `messages` only on multi-turn rows, `prompt` on the others."""
    from router.catalog import load_catalog
    from training.data import load_outcomes, write_outcomes
    from training.demo_data import generate_demo

    path = write_outcomes(generate_demo(40, seed=2, catalog=load_catalog()),
                          tmp_path / "demo.csv.gz")
    raw = pd.read_csv(path)
    assert raw["messages"].isna().any() and raw["messages"].notna().any()
    table = load_outcomes([path])  # what training reads
    async with client_for(outcomes=path) as client:
        for index in (int(np.flatnonzero(raw["messages"].isna())[0]),
                      int(np.flatnonzero(raw["messages"].notna())[0])):
            row = table.iloc[index]
            # The same text under two prompt ids: a request cannot tell them apart.
            same = table[(table["messages"] == row["messages"])
                         & (table["model"] == row["model"])]
            body = (await chat(client, row["model"], json.loads(row["messages"]))).json()
            assert body["router_quality"] == pytest.approx(same["quality"].mean())
            assert body["usage"]["completion_tokens"] == round(same["output_tokens"].mean())


def test_cli_refuses_a_row_training_would_refuse(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_id,prompt,messages,model,quality\np,x,,m,0.5\np,,,m,0.5\n")
    assert cli_main(["fake-upstream", "--port", "1", "--outcomes", str(bad)]) == 1
    assert (f"error: {bad}, row 2: prompt is empty and so is messages\n"
            in capsys.readouterr().err)


@pytest.mark.shared_data
async def test_real_outcome_table_answers_with_recorded_quality(shared_data):
    import pandas as pd

    path = shared_data / "routellm_gsm8k.csv.gz"
    row = pd.read_csv(path, nrows=1).iloc[0]
    async with client_for(outcomes=path) as client:
        body = (await chat(client, row["model"],
                           [{"role": "user", "content": row["prompt"]}])).json()
    assert body["router_quality"] == row["quality"]
    assert body["usage"]["completion_tokens"] == round(row["output_tokens"])


# ---------------------------------------------------------------- CLI


def test_cli_port_in_use_is_one_clear_error(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli_main(["fake-upstream", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: port {port} on 127.0.0.1 is already in use" in err
    assert "hint: pick another --port" in err
    assert "Traceback" not in err


def test_server_sockets_are_tcp_so_asyncio_sets_nodelay():
    # Without IPPROTO_TCP asyncio skips TCP_NODELAY and each answer waits ~40 ms.
    # `router serve`, `router fake-upstream` and serve_in_thread all bind with this.
    from router.fake import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_cli_bad_error_rate_is_refused(capsys):
    assert cli_main(["fake-upstream", "--port", "1", "--error-rate", "2"]) == 1
    assert "error: --error-rate must be in [0, 1], got 2.0" in capsys.readouterr().err


def test_cli_serves_until_stopped(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "fake-upstream", "--port", str(port),
         "--fail", "down", "--outcomes", str(FIXTURES / "outcomes.csv")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1") as http:
                    down = http.post("/chat/completions", json={"model": "down", "messages": HI})
                    strong = http.post("/chat/completions",
                                       json={"model": "strong", "messages": FRANCE})
                break
            except httpx.ConnectError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "fake-upstream did not start"
                time.sleep(0.1)
        assert down.status_code == 503
        assert strong.json()["router_quality"] == 1.0
    finally:
        process.terminate()
        process.communicate(timeout=10)  # also closes the pipe
