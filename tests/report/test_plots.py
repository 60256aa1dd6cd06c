"""The run plots: which files are written, that they hold a drawing, are deterministic, that the event
windows are drawn at the event times on every plot, and what the rounds axis, gate lines, participation
chart, link groups and traffic panel show, on hand-made data whose right answers are worked out here."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from pytest_flopynet.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLIENTS = [f"client_{i}" for i in range(1, 5)]


def make_results(*, trust: bool = True, events: list[dict] | None = None) -> dict:
    """10 rounds of 30 s; round 5 has a straggler, round 6 a rejected update and keeps the global model."""
    rounds = []
    for i in range(10):
        participants = list(CLIENTS)
        stragglers, rejected = [], []
        if i == 4:
            participants, stragglers = CLIENTS[:3], CLIENTS[3:]
        if i == 5:
            rejected = ["client_2"]
        rounds.append({"round": i + 1, "start_time": 30.0 * i, "end_time": 30.0 * (i + 1),
                       "participants": participants, "stragglers": stragglers, "rejected": rejected,
                       "bytes_up": 1000, "bytes_down": 1000, "accuracy": 0.3 + 0.06 * i, "loss": 2.0 - 0.15 * i,
                       "aggregated": i != 5})
    if events is None:
        events = [{"event_type": "network_latency_increase", "target": "all_links", "start_time": 100.0,
                   "end_time": 160.0, "description": "latency up"}]
    results = {"scenario_name": "handmade", "seed": 7, "rounds": rounds, "events": events, "policy_metrics": {}}
    if trust:
        history = [{"time": 30.0 * (i + 1),
                    "trust": {"client_1": 1.0, "client_2": 1.0 - 0.05 * i, "client_3": 1.0, "client_4": 0.9}}
                   for i in range(10)]
        results["policy_metrics"] = {"active_policy": "strict", "trust_history": history}
    return results


def make_samples() -> dict[str, list[list[float]]]:
    t = [10.0 * k for k in range(31)]
    return {"network_latency_ms": [[x, 50.0 if 100 <= x < 160 else 20.0] for x in t],
            "network_bandwidth_utilization": [[x, 0.1 + 0.01 * (k % 5)] for k, x in enumerate(t)],
            "network_packet_loss": [[x, 0.02 if 100 <= x < 160 else 0.0] for x in t],
            "fl_active_clients": [[x, 4.0] for x in t],
            "policy_violations": [[x, 0.0] for x in t],
            "security_events": [[x, 0.0] for x in t]}


def distinct_colours(image: np.ndarray) -> int:
    pixels = (image[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    return len(np.unique(pixels, axis=0))


def event_artists(fig, gid: str) -> list:
    return [a for ax in fig.axes for a in [*ax.patches, *ax.lines] if a.get_gid() == gid]


def test_plot_run_writes_every_plot_as_a_drawn_png(tmp_path):
    written = plots.plot_run(make_results(), make_samples(), tmp_path)
    assert written == ["accuracy_loss.png", "network.png", "participation.png", "rounds.png", "trust.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == written
    for name in written:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        image = imread(tmp_path / name)
        height, width = image.shape[:2]
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert width == pytest.approx(plots.WIDTH * plots.DPI, rel=0.25)  # ~10 inches at 110 dpi
        assert 350 < height < 1400
        # a drawing: lines, shading, text in many colours, and far from all white
        assert distinct_colours(image) > 100
        assert (image[..., :3] < 0.5).mean() > 0.005


def test_trust_plot_only_with_a_trust_history(tmp_path):
    results = make_results(trust=False)
    assert plots.plot_run(results, make_samples(), tmp_path) == ["accuracy_loss.png", "network.png",
                                                                 "participation.png", "rounds.png"]
    assert not (tmp_path / "trust.png").exists()
    results["policy_metrics"] = {"active_policy": "permissive", "trust_history": []}
    assert "trust.png" not in plots.plot_run(results, make_samples(), tmp_path / "empty")


def test_only_plots_with_data_are_written(tmp_path):
    assert plots.plot_run(make_results(), {}, tmp_path / "no-samples") == [
        "accuracy_loss.png", "participation.png", "rounds.png", "trust.png"]
    results = make_results(trust=False)
    results["rounds"] = []
    assert plots.plot_run(results, make_samples(), tmp_path / "no-rounds") == ["network.png"]


def test_same_inputs_give_byte_identical_files(tmp_path):
    first = plots.plot_run(make_results(), make_samples(), tmp_path / "a")
    second = plots.plot_run(make_results(), make_samples(), tmp_path / "b")
    assert first == second
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    plots.plot_comparison({"x": make_results()}, tmp_path / "c1.png")
    plots.plot_comparison({"x": make_results()}, tmp_path / "c2.png")
    assert (tmp_path / "c1.png").read_bytes() == (tmp_path / "c2.png").read_bytes()


def test_different_data_gives_a_different_image(tmp_path):
    other = make_results()
    other["rounds"][3]["accuracy"] = 0.95
    plots.plot_run(make_results(), make_samples(), tmp_path / "a")
    plots.plot_run(other, make_samples(), tmp_path / "b")
    assert (tmp_path / "a" / "accuracy_loss.png").read_bytes() != (tmp_path / "b" / "accuracy_loss.png").read_bytes()
    # the rounds plot does not show accuracy
    assert (tmp_path / "a" / "rounds.png").read_bytes() == (tmp_path / "b" / "rounds.png").read_bytes()


def test_event_window_is_shaded_at_its_times_on_every_panel():
    figures = plots.build_figures(make_results(), make_samples())
    assert set(figures) == {"accuracy_loss.png", "network.png", "participation.png", "rounds.png", "trust.png"}
    for name, fig in figures.items():
        spans = event_artists(fig, "event-1")
        # one span per panel: 2 for accuracy/loss, 3 for rounds and network, 1 for participation and trust
        assert len(spans) == len(fig.axes), name
        for span in spans:
            assert isinstance(span, Rectangle)
            box = span.get_bbox()  # x in data coordinates, y in axes coordinates
            assert (box.x0, box.x1) == pytest.approx((100.0, 160.0)), name
            assert (box.y0, box.y1) == pytest.approx((0.0, 1.0)), name
            assert span.get_facecolor()[:3] == pytest.approx(to_rgb(plots.EVENT_COLOURS[0]))
        # the window is numbered once, on the top panel, and the figure legend names the event type
        tags = [t for t in fig.axes[0].texts if t.get_text() == "1"]
        assert len(tags) == 1 and tags[0].xy[0] == 100.0
        legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        assert legend_texts == ["1  network_latency_increase on all_links (100\u2013160 s)"], name
        assert fig.axes[-1].get_xlabel() == "Scenario time (s)"
        assert "handmade (seed 7)" in fig.get_suptitle()


def test_open_ended_event_is_a_line_and_windows_get_distinct_colours_and_tag_rows():
    events = [{"event_type": "network_partition", "target": "client_group", "start_time": 40.0, "end_time": 90.0},
              {"event_type": "network_packet_loss", "target": "client_links", "start_time": 45.0, "end_time": 100.0},
              {"event_type": "policy_change", "target": "policy_engine", "start_time": 200.0, "end_time": None}]
    fig = plots.build_figures(make_results(events=events), make_samples())["accuracy_loss.png"]
    windows = plots.event_windows(make_results(events=events))
    assert [w.number for w in windows] == [1, 2, 3]
    assert len({w.colour for w in windows}) == 3
    line = event_artists(fig, "event-3")
    assert line and all(not isinstance(a, Rectangle) for a in line)
    assert list(line[0].get_xdata()) == [200.0, 200.0] and line[0].get_linestyle() == "--"
    assert windows[2].label == "3  policy_change on policy_engine (from 200 s)"
    # starts 5 s apart (under 4% of the 300 s axis): the second tag sits one row lower, not on top of the first
    tags = {t.get_text(): t for t in fig.axes[0].texts}
    assert tags["1"].xyann[1] > tags["2"].xyann[1]
    assert tags["3"].xyann[1] == tags["1"].xyann[1]


def test_panels_have_units_and_the_rounds_plot_stacks_participation():
    figures = plots.build_figures(make_results(), make_samples())
    acc, loss = figures["accuracy_loss.png"].axes
    assert acc.get_ylim()[0] == 0 and acc.get_ylim()[1] >= 1.0 and "accuracy" in acc.get_ylabel()
    assert "loss" in loss.get_ylabel()
    # accuracy markers at the round end times
    assert list(acc.lines[0].get_xdata()) == [30.0 * (i + 1) for i in range(10)]
    latency, util, packet_loss = figures["network.png"].axes
    assert latency.get_ylabel().endswith("(ms)") and util.get_ylabel().endswith("(%)")
    assert packet_loss.get_ylabel().endswith("(%)")
    assert max(util.lines[0].get_ydata()) == pytest.approx(14.0)  # fractions drawn as percent
    assert max(packet_loss.lines[0].get_ydata()) == pytest.approx(2.0)
    duration, participation, _ = figures["rounds.png"].axes
    assert duration.get_ylabel() == "Round duration (s)"
    bars = [p for p in participation.patches if isinstance(p, Rectangle) and p.get_gid() is None]
    heights = {}
    for bar in bars:
        heights.setdefault(round(bar.get_x()), 0)
        heights[round(bar.get_x())] += bar.get_height()
    # every round's stack counts its selected clients: participants + stragglers (rejected ones among them)
    assert sorted(heights.values()) == [4] * 10
    trust = figures["trust.png"].axes[0]
    labels = trust.get_legend_handles_labels()[1]
    # identical histories share a line, the least trusted client first
    assert labels == ["client_2 (final 0.55)", "client_4 (final 0.90)", "clients 1, 3 (final 1.00)"]


def test_plot_comparison_overlays_one_line_per_run(tmp_path):
    a, b = make_results(), copy.deepcopy(make_results())
    for r in b["rounds"]:
        r["accuracy"] -= 0.1
    path = plots.plot_comparison({"fedavg": a, "krum": b}, tmp_path / "sub" / "compare.png")
    assert path == tmp_path / "sub" / "compare.png"
    image = imread(path)
    assert image.ndim == 3 and distinct_colours(image) > 100
    fig = plots.comparison_figure({"fedavg": a, "krum": b})
    acc, loss = fig.axes
    assert [line.get_label() for line in acc.lines if not line.get_label().startswith("_")] == ["fedavg", "krum"]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["fedavg", "krum"]
    assert len([line for line in loss.lines if not line.get_label().startswith("_")]) == 2
    # the event both runs share is shaded
    assert [a.get_bbox().x0 for a in event_artists(fig, "event-1")] == [100.0, 100.0]
    assert "handmade" in fig.get_suptitle()


def test_the_rounds_axis_puts_round_i_between_i_minus_1_and_i():
    figures = plots.build_figures(make_results(), make_samples(), x_axis="rounds")
    acc = figures["accuracy_loss.png"].axes[0]
    assert list(acc.lines[0].get_xdata()) == [float(i) for i in range(1, 11)]  # after round i: at i
    assert figures["accuracy_loss.png"].axes[-1].get_xlabel() == plots.ROUNDS_LABEL
    for name, fig in figures.items():
        # 100..160 s: 10 s into round 4 (90..120 s) to 10 s into round 6 (150..180 s), rounds of 30 s
        for span in event_artists(fig, "event-1"):
            assert (span.get_bbox().x0, span.get_bbox().x1) == pytest.approx((3 + 1 / 3, 5 + 1 / 3)), name
    latency = figures["network.png"].axes[0]
    assert list(latency.lines[0].get_xdata()) == pytest.approx([k / 3 for k in range(31)])  # a sample every 10 s
    assert figures["trust.png"].axes[0].lines[0].get_xdata()[0] == pytest.approx(1.0)  # trust after round 1
    with pytest.raises(ValueError, match="x_axis must be one of time, rounds"):
        plots.build_figures(make_results(), make_samples(), x_axis="seconds")


def test_the_rounds_axis_collapses_a_wait_between_rounds():
    rounds = [{"start_time": 0.0, "end_time": 10.0}, {"start_time": 20.0, "end_time": 30.0}]
    x = plots.x_axis_for({"rounds": rounds}, "rounds")
    assert [x(t) for t in (0, 5, 10, 15, 20, 25, 30, 40)] == [0, 0.5, 1, 1, 1, 1.5, 2, 2]
    assert plots.x_axis_for({"rounds": rounds}, "time")(15.0) == 15.0
    assert plots.x_axis_for({"rounds": []}, "rounds") == plots.TIME  # nothing to count: scenario time


def gate_lines(fig) -> dict[str, list[tuple[int, float]]]:
    """gate metric -> (panel index, y) of each dashed gate line in the figure."""
    found: dict[str, list[tuple[int, float]]] = {}
    for i, ax in enumerate(fig.axes):
        for line in ax.lines:
            gid = line.get_gid() or ""
            if gid.startswith("gate:"):
                assert line.get_ydata()[0] == line.get_ydata()[1]  # horizontal
                found.setdefault(gid[5:], []).append((i, line.get_ydata()[0]))
    return found


def test_gates_are_drawn_at_their_threshold_on_the_panel_of_their_metric():
    gates = ["final_accuracy >= 0.8", "final_loss <= 0.9", "max_network_latency <= 60",
             "metrics_analysis.network_packet_loss.server_links.max <= 0.03",
             "metrics_analysis.round_duration_seconds.max <= 45",
             "metrics_analysis.accuracy.trend >= 0",  # a slope: no panel shows it
             "fl_rounds_completed >= 10", "robustness_metrics.max_accuracy_drop <= 0.1"]  # no panel either
    figures = plots.build_figures(make_results(), make_samples(), gates=gates)
    assert gate_lines(figures["accuracy_loss.png"]) == {"final_accuracy": [(0, 0.8)], "final_loss": [(1, 0.9)]}
    # packet loss is drawn in percent: 0.03 -> 3 %; the latency axis grows to show 60 ms above its 50 ms data
    assert gate_lines(figures["network.png"]) == {"max_network_latency": [(0, 60.0)],
                                                 "metrics_analysis.network_packet_loss.server_links.max": [(2, 3.0)]}
    assert figures["network.png"].axes[0].get_ylim()[1] > 60
    assert gate_lines(figures["rounds.png"]) == {"metrics_analysis.round_duration_seconds.max": [(0, 45.0)]}
    assert gate_lines(figures["participation.png"]) == gate_lines(figures["trust.png"]) == {}
    acc = figures["accuracy_loss.png"].axes[0]
    assert [t.get_text() for t in acc.texts if t.get_text().startswith("final")] == ["final_accuracy >= 0.8"]
    # the last gate per metric counts, as when gates are merged; parsed Gates are accepted as they are
    later = plots.build_figures(make_results(), make_samples(),
                                gates=["final_accuracy >= 0.8", plots.parse_gate("final_accuracy >= 0.7")])
    assert gate_lines(later["accuracy_loss.png"]) == {"final_accuracy": [(0, 0.7)]}


def participation_results() -> dict:
    """make_results' rounds, and client_3 left out of round 7 (not selected)."""
    results = make_results()
    results["rounds"][6]["participants"] = ["client_1", "client_2", "client_4"]
    return results


def test_the_participation_grid_marks_each_clients_part_in_each_round():
    clients, grid = plots.participation_grid(participation_results())
    assert clients == CLIENTS
    everyone = dict.fromkeys(CLIENTS, "accepted")
    expected = [everyone] * 10
    expected[4] = {**everyone, "client_4": "straggler"}  # round 5: client_4 sent nothing before the deadline
    expected[5] = {**everyone, "client_2": "rejected"}  # round 6: client_2's update rejected by the policy
    expected[6] = {c: "accepted" for c in CLIENTS if c != "client_3"}  # round 7: client_3 not selected
    assert grid == expected
    # client numbers sort as numbers; a client seen in one round only still gets its row
    clients, few = plots.participation_grid({"rounds": [{"participants": ["client_10", "client_2"]},
                                                         {"participants": ["client_2"], "stragglers": ["client_1"]}]})
    assert clients == ["client_1", "client_2", "client_10"]
    assert few == [{"client_10": "accepted", "client_2": "accepted"}, {"client_1": "straggler", "client_2": "accepted"}]


def cells(fig, gid: str) -> list[tuple[float, float, float]]:
    """(x start, x end, y middle) of each cell a participation collection draws."""
    (collection,) = [c for c in fig.axes[0].collections if c.get_gid() == gid]
    out = []
    for path in collection.get_paths():
        xs, ys = path.vertices[:, 0], path.vertices[:, 1]
        out.append((float(xs.min()), float(xs.max()), float((ys.min() + ys.max()) / 2)))
    return out


def test_the_participation_chart_draws_each_cell_in_its_rounds_span_and_its_clients_row():
    fig = plots.build_figures(participation_results(), make_samples())["participation.png"]
    # round 5 spans 120..150 s; the cell keeps 6% of it free on each side; client_4 is the 4th row (y = 3)
    assert cells(fig, "participation:straggler:client_4") == [pytest.approx((121.8, 148.2, 3.0))]
    assert cells(fig, "participation:rejected:client_2") == [pytest.approx((151.8, 178.2, 1.0))]
    assert cells(fig, "participation:absent:client_3") == [pytest.approx((181.8, 208.2, 2.0))]
    assert len(cells(fig, "participation:accepted:client_1")) == 10 and len(
        cells(fig, "participation:accepted:client_3")) == 9
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == CLIENTS
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # client_1 on top
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "update accepted", "update rejected by policy", "straggler or failed (no update in time)",
        "not selected (away, cut off or not drawn)"]
    rounds_fig = plots.build_figures(participation_results(), make_samples(), x_axis="rounds")["participation.png"]
    assert cells(rounds_fig, "participation:straggler:client_4") == [pytest.approx((4.06, 4.94, 3.0))]
    assert plots.participation_figure({"rounds": []}) is None


def test_network_panels_show_each_link_group_and_the_mean_over_all_links():
    samples = make_samples()
    t = [10.0 * k for k in range(31)]
    samples["network_latency_ms.client_links"] = [[x, 60.0 if 100 <= x < 160 else 20.0] for x in t]
    samples["network_latency_ms.server_links"] = [[x, 20.0] for x in t]
    samples["network_bandwidth_utilization.server_links"] = [[x, 0.5] for x in t]
    latency, util, loss = plots.build_figures(make_results(), samples)["network.png"].axes
    labels = [line.get_label() for line in latency.lines if not line.get_label().startswith("_")]
    assert labels == ["mean over client links", "mean over server links", "mean over all links"]
    assert max(latency.lines[0].get_ydata()) == 60.0 and set(latency.lines[1].get_ydata()) == {20.0}
    assert [line.get_label() for line in util.lines] == ["mean over server links", "mean over all links"]
    assert set(util.lines[0].get_ydata()) == {50.0}  # in percent
    # utilisation is a mean over the window before its sample: drawn back to the previous one
    assert util.lines[0].get_drawstyle() == "steps-pre" and latency.lines[0].get_drawstyle() == "steps-post"
    assert len(loss.lines) == 1 and loss.lines[0].get_label().startswith("_")  # no groups sampled: the mean alone
    assert [t.get_text() for t in latency.get_legend().get_texts()] == labels


def test_the_traffic_panel_is_the_running_sum_of_bytes_up_and_down():
    results = make_results()
    for i, r in enumerate(results["rounds"]):
        r["bytes_up"], r["bytes_down"] = 1000 * (i + 1), 500
    traffic = plots.build_figures(results, {})["rounds.png"].axes[2]
    total, down, up = traffic.lines
    assert total.get_label() == "uploads + downloads" and traffic.get_ylabel() == "Traffic so far (kB)"
    # 60,000 bytes in all: kB; a step at each round's end, from 0 at the first round's start
    running = [0.0]
    for i in range(10):
        running.append(running[-1] + (1000 * (i + 1) + 500) / 1000)
    assert list(total.get_xdata()) == [0.0] + [30.0 * (i + 1) for i in range(10)]
    assert list(total.get_ydata()) == pytest.approx(running)
    assert list(down.get_ydata()) == pytest.approx([0.5 * i for i in range(11)])
    assert list(up.get_ydata())[-1] == pytest.approx(55.0)
    assert total.get_drawstyle() == "steps-post"
