"""The fake provider's latency per model (issue 12): fixed per model at start-up, the
outcome table's recorded timings scaled, and a run-time slowdown."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from router.cli import main as cli_main
from router.errors import RouterError
from router.fake import create_fake_upstream, load_outcome_table, serve_in_thread

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def timed_table(tmp_path: Path) -> Path:
    path = tmp_path / "timed.csv"
    pd.DataFrame({
        "prompt_id": ["p", "p"], "prompt": [FRANCE[0]["content"]] * 2,
        "model": ["fast", "slow"], "quality": [0.5, 0.9], "output_tokens": [40, 40],
        "latency_ms": [2000.0, 8000.0], "ttft_ms": [500.0, 1000.0],
    }).to_csv(path, index=False)
    return path


async def timed(client: httpx.AsyncClient, model: str, **extra: Any) -> tuple[float, float]:
    """(seconds to the response headers, seconds to the end of the body)."""
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions",
                             json={"model": model, "messages": FRANCE, **extra}) as response:
        assert response.status_code == 200
        first = time.perf_counter() - started
        await response.aread()
    return first, time.perf_counter() - started


def client_for(**options: Any) -> httpx.AsyncClient:
    app = create_fake_upstream(**options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake")


def test_the_table_keeps_its_recorded_timings(timed_table: Path) -> None:
    table = load_outcome_table(timed_table)
    digests = {d for d, _ in table.quality}
    assert [table.timing(d, "slow") for d in digests] == [(8000.0, 1000.0)]


async def test_answers_take_the_recorded_latency_times_the_scale(timed_table: Path) -> None:
    async with client_for(outcomes=timed_table, latency_scale=0.05) as client:
        _, fast = await timed(client, "fast")  # 2000 ms x 0.05 = 100 ms
        _, slow = await timed(client, "slow")  # 8000 ms x 0.05 = 400 ms
    assert 0.09 <= fast < 0.3 and 0.39 <= slow < 0.7


def test_a_stream_sends_its_first_token_after_the_recorded_ttft(timed_table: Path) -> None:
    # Over a socket: the in-process transport buffers a streamed body.
    app = create_fake_upstream(outcomes=timed_table, latency_scale=0.05)
    with serve_in_thread(app, lifespan="off") as url, httpx.Client(base_url=url) as client:
        started = time.perf_counter()
        with client.stream("POST", "/v1/chat/completions",
                           json={"model": "slow", "messages": FRANCE, "stream": True}) as r:
            chunks = r.iter_bytes()
            next(chunks)
            first = time.perf_counter() - started  # ttft 1000 ms x 0.05 = 50 ms
            for _ in chunks:
                pass
        whole = time.perf_counter() - started  # latency 8000 ms x 0.05 = 400 ms
    assert 0.045 <= first < 0.25 and 0.39 <= whole < 0.8


async def test_a_run_time_slowdown_multiplies_one_models_latency(timed_table: Path) -> None:
    async with client_for(outcomes=timed_table, latency_scale=0.02) as client:
        _, before = await timed(client, "fast")  # 40 ms
        control = await client.post("/_control", json={"model": "fast", "slowdown": 10})
        assert control.json()["models"]["fast"]["slowdown"] == 10
        _, after = await timed(client, "fast")  # 400 ms
        refused = await client.post("/_control", json={"model": "fast", "slowdown": -1})
    assert before < 0.2 and after >= 0.39
    assert refused.status_code == 400 and "slowdown must be a number >= 0" in refused.text


async def test_per_model_latency_at_start_up_without_a_table() -> None:
    async with client_for(model_latency_ms={"m1": 300.0}) as client:
        _, slow = await timed(client, "m1")
        _, other = await timed(client, "m2")
    assert slow >= 0.29 and other < 0.1


def test_bad_latency_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RouterError, match="latency_scale must be >= 0"):
        create_fake_upstream(latency_scale=-0.5)
    with pytest.raises(RouterError, match="latency of m must be >= 0 ms"):
        create_fake_upstream(model_latency_ms={"m": -3.0})
    assert cli_main(["fake-upstream", "--port", "1", "--model-latency", "gpt-4o:900"]) == 1
    assert "'gpt-4o:900' is not MODEL=MS" in capsys.readouterr().err
    assert cli_main(["fake-upstream", "--port", "1", "--latency-scale", "0.1"]) == 1
    assert "--latency-scale scales the latencies an outcome table recorded" in \
        capsys.readouterr().err
