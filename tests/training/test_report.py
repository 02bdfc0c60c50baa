"""`router report` over a real SQLite outcome log whose every total is known."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from router.cli import main
from router.errors import ConfigError
from router.outcome_log import FeedbackRecord, RequestRecord, open_outcome_log
from training.report import (
    build_report,
    format_report,
    load_log,
    parse_since,
)
from training.report_plot import plot_report, spend_figure

CANDS = [{"model": "cheap", "expected_quality": 0.6, "expected_cost_usd": 0.001},
         {"model": "mid", "expected_quality": 0.75, "expected_cost_usd": 0.004},
         {"model": "strong", "expected_quality": 0.9, "expected_cost_usd": 0.010}]
NO_STRONG = [{"model": "cheap", "expected_quality": 0.6, "expected_cost_usd": 0.002},
             {"model": "mid", "expected_quality": 0.75, "expected_cost_usd": 0.005}]

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY1, DAY2 = TODAY - timedelta(days=3), TODAY - timedelta(days=2)


def at(day: datetime, hour: int) -> float:
    return (day + timedelta(hours=hour)).timestamp()


def record(rid, ts, chosen, served, cost, *, candidates=CANDS, **extra) -> RequestRecord:
    return RequestRecord(request_id=rid, ts=ts, conversation_hash=rid, candidates=candidates,
                         chosen_model=chosen, served_model=served, cost_usd=cost, **extra)


TIMED = {"latency_ms": 400.0, "ttfb_ms": 100.0, "input_tokens": 50, "output_tokens": 20}
RECORDS = [
    record("r1", at(DAY1, 9), "cheap", "cheap", 0.0012, **TIMED),
    record("r2", at(DAY1, 10), "mid", "mid", 0.0035, latency_ms=1000.0),
    record("r3", at(DAY1, 11), "cheap", "mid", 0.004,  # cheap failed, mid answered
           fallback_path=[{"model": "cheap", "error": "server_error"}], latency_ms=2500.0),
    # A cache hit and an error are no answer of the model: not in its timing or tokens.
    record("r4", at(DAY1, 12), "cheap", "cheap", 0.0, cache_hit=True, latency_ms=5.0),
    record("r5", at(DAY2, 9), "strong", "strong", 0.011),
    record("r6", at(DAY2, 10), "cheap", None, None, status=503, error="upstream down",
           latency_ms=3000.0),
    record("r7", at(DAY2, 11), "strong", "strong", 0.009, candidates=[]),  # pass-through
    record("r8", at(DAY2, 12), "cheap", "cheap", 0.0021, candidates=NO_STRONG,
           latency_ms=800.0, ttfb_ms=300.0, input_tokens=70, output_tokens=40),
]
FEEDBACK = [("r1", 1.0), ("r2", 0.5), ("r2", 0.0), ("r5", 1.0), ("r8", 0.0)]


@pytest.fixture
async def log_path(tmp_path):
    path = tmp_path / "outcomes.db"
    log = open_outcome_log(str(path))
    await log.start()
    for rec in RECORDS:
        assert log.log(rec)
    await log.flush()
    for rid, quality in FEEDBACK:
        assert await log.add_feedback(FeedbackRecord(rid, quality, ts=at(DAY2, 20)))
    await log.close()
    # An old request outside every window used below.
    old = open_outcome_log(str(path))
    await old.start()
    old.log(record("r0", at(TODAY - timedelta(days=40), 0), "strong", "strong", 5.0))
    await old.close()
    return path


def test_every_number_of_the_report(log_path):
    since = TODAY - timedelta(days=7)
    report = build_report(load_log(str(log_path), since=since), since=since, source="x")
    assert report["requests"] == 8
    assert report["spend_usd"] == pytest.approx(0.0308)
    assert report["mean_feedback_quality"] == pytest.approx(0.5625)  # (1 + .25 + 1 + 0) / 4
    assert report["rated"] == 4
    top = report["counterfactuals"]["most_expensive"]
    # .010 for each of r1 r2 r3 r5, actual 0 for the cache hit and the error, .009 for the
    # pass-through, .005 for r8 whose most expensive candidate was mid.
    assert top["spend_usd"] == pytest.approx(0.054)
    assert top["saving_usd"] == pytest.approx(0.0232)
    assert top["saving_pct"] == pytest.approx(100 * 0.0232 / 0.054)
    best = report["counterfactuals"]["best_model"]
    assert best["model"] == "strong"
    assert best["chosen_by"] == "highest mean expected quality among candidates, 0.900"
    assert best["requests_without_estimate"] == 1  # r8 never considered strong
    assert best["spend_usd"] == pytest.approx(0.0511)
    assert best["saving_usd"] == pytest.approx(0.0203)
    assert best["saving_pct"] == pytest.approx(100 * 0.0203 / 0.0511)
    assert report["rates"] == {"fallback": 0.125, "cache_hit": 0.125, "explored": 0.0,
                               "error": 0.125}
    models = {m["model"]: m for m in report["models"]}
    assert [m["model"] for m in report["models"]] == ["cheap", "mid", "strong"]
    assert {k: (m["requests"], m["share"]) for k, m in models.items()} == {
        "cheap": (4, 0.5), "mid": (2, 0.25), "strong": (2, 0.25)}
    assert models["cheap"]["spend_usd"] == pytest.approx(0.0033)
    assert models["mid"]["spend_usd"] == pytest.approx(0.0075)
    assert models["strong"]["spend_usd"] == pytest.approx(0.020)
    assert models["strong"]["cost_per_request_usd"] == pytest.approx(0.010)
    assert {k: (m["mean_feedback_quality"], m["rated"]) for k, m in models.items()} == {
        "cheap": (0.5, 2), "mid": (0.25, 1), "strong": (1.0, 1)}
    # Timing and tokens over the answers each model gave (r1 and r8 for cheap).
    cheap = models["cheap"]
    assert cheap["error_rate"] == 0.25  # r6
    assert (cheap["mean_input_tokens"], cheap["mean_output_tokens"]) == (60.0, 30.0)
    assert (cheap["p50_latency_ms"], cheap["p99_latency_ms"]) == pytest.approx((600.0, 796.0))
    assert (cheap["p50_ttft_ms"], cheap["p99_ttft_ms"]) == pytest.approx((200.0, 298.0))
    assert (models["mid"]["p50_latency_ms"], models["mid"]["p99_latency_ms"]) == pytest.approx(
        (1750.0, 2485.0))
    assert models["mid"]["p50_ttft_ms"] is None and models["strong"]["p99_latency_ms"] is None
    day1, day2 = report["days"]
    assert (day1["day"], day2["day"]) == (DAY1.strftime("%Y-%m-%d"), DAY2.strftime("%Y-%m-%d"))
    assert (day1["requests"], day2["requests"]) == (4, 4)
    assert day1["spend_usd"] == pytest.approx(0.0087)
    assert day2["spend_usd"] == pytest.approx(0.0221)
    assert (day1["most_expensive_usd"], day2["most_expensive_usd"]) == pytest.approx(
        (0.030, 0.024))
    assert (day1["best_model_usd"], day2["best_model_usd"]) == pytest.approx((0.030, 0.0211))
    assert (day1["mean_feedback_quality"], day2["mean_feedback_quality"]) == (0.625, 0.5)
    assert day2["quality_by_model"] == {"cheap": 0.0, "strong": 1.0}


async def test_cache_hits_fallbacks_and_exploration_are_counted_apart(tmp_path):
    # 20 identical requests answered once by a fallback model, then 19 times from the
    # cache: one fallback, not 20 (the cached answer came from mid, chosen was cheap).
    # Three more: an explored request, a breaker skip, and a plain one.
    rows = [record("f0", at(DAY1, 9), "cheap", "mid", 0.004,
                   fallback_path=[{"model": "cheap", "error": "server_error"}])]
    rows += [record(f"h{i}", at(DAY1, 9), "cheap", "mid", 0.0, cache_hit=True)
             for i in range(19)]
    rows += [record("x1", at(DAY1, 10), "strong", "strong", 0.01, explored=True,
                    propensity=0.05),
             record("c1", at(DAY1, 11), "cheap", "mid", 0.004),  # cheap's breaker was open
             record("p1", at(DAY1, 12), "cheap", "cheap", 0.001)]
    path = tmp_path / "outcomes.db"
    log = open_outcome_log(str(path))
    await log.start()
    for rec in rows:
        assert log.log(rec)
    await log.close()

    report = build_report(load_log(str(path)))
    assert report["requests"] == 23
    assert report["rates"] == pytest.approx({"cache_hit": 19 / 23, "fallback": 2 / 23,
                                             "explored": 1 / 23, "error": 0.0})
    assert "rates: cache hit 82.6%, fallback 8.7%, explored 4.3%, error 0.0%" in \
        format_report(report)


def test_a_named_baseline_can_show_the_router_spent_more(log_path):
    report = build_report(load_log(str(log_path), since=TODAY - timedelta(days=7)),
                          baseline="mid")
    best = report["counterfactuals"]["best_model"]
    # .004 x 4 routable requests with mid, .005 for r8, actual .009 for the pass-through
    assert best["spend_usd"] == pytest.approx(0.030)
    assert best["saving_usd"] == pytest.approx(-0.0008)
    assert best["chosen_by"] == "named with --baseline"
    assert best["requests_without_estimate"] == 0
    with pytest.raises(ConfigError) as err:
        build_report(load_log(str(log_path)), baseline="gpt-9")
    assert err.value.message == "--baseline 'gpt-9' was never a candidate in this window"
    assert err.value.hint == "models the router considered: cheap, mid, strong"


def test_the_window_is_respected(log_path):
    everything = build_report(load_log(str(log_path)))
    assert everything["requests"] == 9 and everything["spend_usd"] == pytest.approx(5.0308)
    recent = build_report(load_log(str(log_path), since=DAY2))
    assert recent["requests"] == 4
    empty = build_report(load_log(str(log_path), since=TODAY + timedelta(days=1)))
    assert empty["requests"] == 0
    assert format_report({**empty, "source": "x"}).endswith(
        "no requests in this window; widen --since or check --log")


def test_text_report_states_savings_and_the_estimate(log_path):
    since = TODAY - timedelta(days=7)
    text = format_report(build_report(load_log(str(log_path), since=since), since=since,
                                      source=str(log_path)))
    assert f"outcome log {log_path}, since {since.isoformat()}: 8 requests" in text
    assert "spend $0.0308, mean feedback quality 0.562 (4 rated)" in text
    assert ("the most expensive model considered: $0.0540; saving $0.0232 (43.0%)" in text)
    assert ("the best single model, strong (highest mean expected quality among candidates, "
            "0.900): $0.0511; saving $0.0203 (39.7%); 1 requests without an estimate for "
            "it count at actual cost") in text
    assert "estimate: counterfactual spend = the router's expected cost" in text
    assert "rates: cache hit 12.5%, fallback 12.5%, explored 0.0%, error 12.5%" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line}
    assert "p50 ms  p99 ms  ttft p50  ttft p99" in text
    assert rows["cheap"] == ["cheap", "4", "50.0%", "$0.0033", "$0.000825", "0.500", "2",
                             "25.0%", "60", "30", "600", "796", "200", "298"]
    assert rows["strong"][-7:] == ["0.0%", "-", "-", "-", "-", "-", "-"]
    assert rows[DAY2.strftime("%Y-%m-%d")] == [DAY2.strftime("%Y-%m-%d"), "4", "$0.0221",
                                               "$0.0240", "$0.0211", "0.500"]


def test_cli_json_and_plot(log_path, tmp_path, capsys):
    png = tmp_path / "plots" / "spend.png"
    code = main(["report", "--log", f"sqlite:///{log_path}", "--since", "7d", "--json",
                 "--plot", str(png)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 8
    assert report["counterfactuals"]["most_expensive"]["saving_usd"] == pytest.approx(0.0232)
    assert report["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # two panels with lines, legends and labels


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["report", "--log", str(tmp_path / "missing.db")]) == 1
    err = capsys.readouterr().err
    assert f"error: no outcome log at {tmp_path / 'missing.db'}" in err
    assert main(["report", "--log", str(tmp_path / "missing.db"), "--since", "last week"]) == 1
    err = capsys.readouterr().err
    assert "error: --since: cannot read 'last week'" in err
    assert "hint: use a duration such as 7d, 36h, 1h30m, or a date such as 2025-01-31" in err


def test_plot_of_an_empty_window_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="nothing to plot"):
        plot_report(build_report(load_log_empty()), tmp_path / "x.png")


def load_log_empty():
    import pandas as pd

    return pd.DataFrame(columns=["ts"])


def test_parse_since():
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert parse_since("7d", now=now) == datetime(2026, 3, 3, 12, tzinfo=UTC)
    assert parse_since("36h", now=now) == datetime(2026, 3, 9, 0, tzinfo=UTC)
    assert parse_since("2026-03-01", now=now) == datetime(2026, 3, 1, tzinfo=UTC)


async def test_route_only_decisions_are_counted_apart_not_as_savings(tmp_path, capsys):
    """`/v1/route` called no model: it adds neither requests nor a flagship counterfactual."""
    path = tmp_path / "mixed.db"
    log = open_outcome_log(str(path))
    await log.start()
    answered = [record("c1", at(DAY1, 9), "cheap", "cheap", 0.001),
                record("c2", at(DAY1, 10), "mid", "mid", 0.004)]
    decisions = [record(f"d{i}", at(DAY1, 11 + i), "cheap", None, None, endpoint="route")
                 for i in range(3)]
    for rec in answered + decisions:
        assert log.log(rec)
    await log.close()

    report = build_report(load_log(str(path)), source="x")
    assert report["requests"] == 2
    assert report["route_only"]["decisions"] == 3
    top = report["counterfactuals"]["most_expensive"]
    assert top["spend_usd"] == pytest.approx(0.020)  # strong's .010 for c1 and c2 only
    assert top["saving_usd"] == pytest.approx(0.015)
    assert [(m["model"], m["requests"], m["share"]) for m in report["models"]] == [
        ("cheap", 1, 0.5), ("mid", 1, 0.5)]
    assert report["days"][0]["requests"] == 2

    assert main(["report", "--log", str(path), "--since", "30d"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(": 2 requests")
    assert lines[1] == ("route-only decisions: 3 (POST /v1/route, no model called; "
                        "not in spend or savings)")
    assert any("the most expensive model considered: $0.0200; saving $0.0150 (75.0%)" in line
               for line in lines)


async def _one_day_log(path, *, feedback: bool):
    day = datetime(2025, 11, 25, tzinfo=UTC)
    log = open_outcome_log(str(path))
    await log.start()
    for i in range(4):
        assert log.log(record(f"q{i}", at(day, 9 + i), "cheap", "cheap", 0.0011))
    await log.flush()
    if feedback:
        assert await log.add_feedback(FeedbackRecord("q1", 1.0, ts=at(day, 20)))
    await log.close()
    return build_report(load_log(str(path)), source=str(path))


def _drawn(fig, tmp_path):
    fig.savefig(tmp_path / "spend.png")  # tick labels and layout are set when drawn
    cost, quality = fig.axes
    legend = quality.get_legend()
    return (cost, quality, [t.get_text() for t in cost.get_legend().get_texts()],
            [t.get_text() for t in legend.get_texts()] if legend else [])


async def test_spend_plot_of_one_day_shows_that_day_once_and_no_empty_legend(tmp_path):
    report = await _one_day_log(tmp_path / "one.db", feedback=False)
    cost, quality, cost_legend, quality_legend = _drawn(spend_figure(report), tmp_path)
    assert [t.get_text() for t in quality.get_xticklabels()] == ["Nov 25"]
    assert quality.get_xlabel() == "day (UTC)"
    assert cost.get_ylabel() == "spend per day (USD)"
    assert cost_legend == [r"if most expensive considered (\$0.0400)",
                           r"if all to strong (\$0.0400)", r"router, actual (\$0.0044)"]
    # No feedback at all: no line, so no legend entry; the panel says why it is empty.
    assert quality_legend == [] and not quality.get_lines()
    assert [t.get_text() for t in quality.texts] == [
        "no feedback in this window (POST /v1/feedback)"]
    assert plot_report(report, tmp_path / "p" / "spend.png").read_bytes()[:4] == b"\x89PNG"


async def test_spend_plot_legend_names_only_what_has_a_point(tmp_path):
    report = await _one_day_log(tmp_path / "one.db", feedback=True)
    _, quality, _, quality_legend = _drawn(spend_figure(report), tmp_path)
    assert quality_legend == ["cheap", "all requests"]
    assert quality.get_ylabel() == "mean feedback quality"


def test_spend_plot_of_a_month_labels_every_tick_differently(log_path, tmp_path):
    report = build_report(load_log(str(log_path)))  # r0 40 days back, then two days
    assert len(report["days"]) == 3
    _, quality, _, _ = _drawn(spend_figure(report), tmp_path)
    labels = [t.get_text() for t in quality.get_xticklabels() if t.get_text()]
    assert len(labels) >= 3 and len(set(labels)) == len(labels)
