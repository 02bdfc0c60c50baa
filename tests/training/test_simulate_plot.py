"""The `router simulate --plot` figure, checked through its matplotlib objects."""

from __future__ import annotations

from training.simulate_plot import plot_simulation, simulation_figure


def result(promoted: tuple[int, ...]) -> dict:
    rounds = [{"round": i, "model_version": f"v{i}", "promoted": i in promoted,
               "requests": 100, "quality": 0.70 + 0.01 * i, "cost_usd": 0.0012 - 0.0001 * i,
               "aiq": 0.88 + 0.01 * i} for i in (1, 2, 3)]
    # The model after the last retrain is the best point: its label sits highest.
    return {"rounds": rounds, "full_data_aiq": 0.9011, "final_aiq": 0.9241,
            "zero_router_aiq": 0.85, "full_data_quality": 0.74, "full_data_cost_usd": 0.0009}


def test_each_quantity_has_its_own_panel_and_cost_reads_in_plain_dollars(tmp_path):
    fig = simulation_figure(result(promoted=(1,)))
    fig.savefig(tmp_path / "loop.png")  # ticks, offsets and layout are set when drawn
    cost, quality, aiq = fig.axes  # three panels, no twin axis to read a line against
    assert [ax.get_title() for ax in fig.axes] == [
        "served cost per round", "served quality per round",
        "router quality vs the full-data router"]
    assert cost.get_ylabel() == "mean cost per request (USD)"
    assert quality.get_ylabel() == "mean recorded quality"
    assert aiq.get_ylabel() == "AIQ on the held-out prompts"
    cost_ticks = [t.get_text() for t in cost.get_yticklabels()]
    assert "$0.0010" in cost_ticks and all(t.startswith("$") for t in cost_ticks)
    assert cost.yaxis.get_offset_text().get_text() == ""  # no "1e-3" above the axis
    assert [t.get_text() for t in aiq.get_xticklabels()] == ["1", "2", "3", "final"]
    assert [t.get_text() for t in aiq.get_legend().get_texts()] == [
        "serving model's AIQ (held-out)", "after the last retrain",
        "full-data router (0.901)", "Zero router (0.850)"]
    assert [t.get_text() for t in cost.get_legend().get_texts()] == [
        "full-data router (held-out)", "served traffic"]


def test_new_model_labels_stay_inside_their_panel(tmp_path):
    fig = simulation_figure(result(promoted=(2, 3)))
    fig.savefig(tmp_path / "loop.png")
    renderer = fig.canvas.get_renderer()
    aiq = fig.axes[2]
    labels = [t for t in aiq.texts if t.get_text() == "new model"]
    assert len(labels) == 2
    inside = aiq.get_window_extent(renderer)
    for label in labels:
        box = label.get_window_extent(renderer)
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, "label leaves the panel"
        for ax in fig.axes:
            assert not box.overlaps(ax.title.get_window_extent(renderer))


def test_plot_simulation_writes_a_png(tmp_path):
    out = plot_simulation(result(promoted=()), tmp_path / "sub" / "loop.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_latency_incident_is_drawn_as_the_slowed_models_share_over_time(tmp_path):
    timeline = ([{"seconds": -10 + 0.5 * i, "model": "m"} for i in range(20)]
                + [{"seconds": 0.5 * i, "model": "m" if i < 6 else "x"} for i in range(40)])
    incident = {"model": "m", "slowdown": 5.0, "max_latency_ms": 2500.0, "window": 10,
                "requests_to_drop": 14, "seconds_to_drop": 6.5, "timeline": timeline}
    fig = simulation_figure({"rounds": [], "full_data_aiq": 0.9,
                             "latency_incident": incident})
    fig.savefig(tmp_path / "incident.png")
    (ax,) = fig.axes  # no empty round panels
    assert ax.get_title() == "latency incident under max_latency_ms=2500, no retrain"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "m's share of the last 10 requests", "m made 5x slower",
        "traffic lost after 6.5 s (14 requests)"]
    share = ax.get_lines()[0].get_ydata()
    assert share[19] == 1.0 and share[-1] == 0.0
