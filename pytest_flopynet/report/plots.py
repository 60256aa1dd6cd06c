"""PNG plots of one run (accuracy and loss, rounds and communication, per-client participation, network per
link group, trust) and of several runs overlaid.

Pure functions: analysis data in, files out. Figures are drawn on ``matplotlib.figure.Figure`` with the
Agg canvas (no pyplot, no global state, safe from threads) and saved without the metadata that varies, so
the same inputs give byte-identical PNGs. Every plot of a run shades the scenario's event windows the same
way (``event_windows`` and ``shade_events``): one colour per event, a numbered tag at the window's start
and a legend below the figure that names each number's event type, target and times. The x-axis is
scenario time or the rounds (``x_axis="rounds"``, see ``XAxis``), and a run's gates are drawn as dashed
lines on the panel of their metric (``gate_panel``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..model import by_client_number
from ..model.gates import Gate, parse_gate

DPI = 110
WIDTH = 10.0  # inches
PANEL_HEIGHT = 3.4  # inches per stacked panel
SPAN_ALPHA = 0.3
# Pale, mutually distinct event colours; the data drawn over them uses the saturated tab10 colours.
EVENT_COLOURS = ("#f4a93b", "#6cc56c", "#b58ad8", "#5fbfd6", "#ef7f7f", "#c9b458", "#8c9fe0", "#e58ac8",
                 "#9ccf9c", "#d0a080", "#a0a0a0", "#7fd3c0")
LINE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                "tab:gray", "tab:olive", "tab:cyan")
LINE_STYLES = ("-", "--", "-.", ":")
TIME_LABEL = "Scenario time (s)"
ROUNDS_LABEL = "FL round (round i spans i \u2212 1 to i)"
SAVE_KWARGS = {"dpi": DPI, "format": "png", "metadata": {"Software": None}}
X_AXES = ("time", "rounds")


# -- the x-axis ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class XAxis:
    """Where a scenario time is drawn: at itself, or on the rounds axis, where round i spans i - 1 to i
    (linear in time within the round; waits between rounds collapse), so slow and fast rounds read alike
    and runs of different speeds line up round by round. Samples and event windows map the same way."""
    label: str = TIME_LABEL
    times: tuple[float, ...] = ()  # rounds axis: the rounds' start and end times ...
    positions: tuple[float, ...] = ()  # ... and where they sit on it

    @property
    def rounds(self) -> bool:
        return bool(self.times)

    def __call__(self, t: float) -> float:
        if not self.times or not math.isfinite(t):
            return t
        return float(np.interp(t, self.times, self.positions))

    def many(self, times: Iterable[float]) -> list[float]:
        return [self(t) for t in times]


TIME = XAxis()


def x_axis_for(results: dict, x_axis: str = "time") -> XAxis:
    """The axis a run's figures share: scenario time, or its rounds (time where the run has none)."""
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {', '.join(X_AXES)}, not {x_axis!r}")
    knots: list[tuple[float, float]] = []
    rounds = (results.get("rounds") or []) if x_axis == "rounds" else []
    for i, r in enumerate(rounds, start=1):
        for t, x in ((_num(r.get("start_time")), i - 1.0), (_num(r.get("end_time")), float(i))):
            if math.isfinite(t) and (not knots or (t >= knots[-1][0] and (t, x) != knots[-1])):
                knots.append((t, x))
    if not knots:
        return TIME
    return XAxis(ROUNDS_LABEL, tuple(t for t, _ in knots), tuple(x for _, x in knots))


# -- event windows ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventWindow:
    """One scenario event as the plots draw it: numbered in start order, with its own colour."""
    number: int
    event_type: str
    target: str
    start: float
    end: float | None  # None: the event has no end (drawn as a dashed line at its start)
    colour: str

    @property
    def gid(self) -> str:
        return f"event-{self.number}"

    @property
    def label(self) -> str:
        when = f"{_seconds(self.start)}\u2013{_seconds(self.end)} s" if self.end is not None \
            else f"from {_seconds(self.start)} s"
        target = f" on {self.target}" if self.target else ""
        return f"{self.number}  {self.event_type}{target} ({when})"


def event_windows(results: dict) -> list[EventWindow]:
    """The run's events in start order, numbered from 1, each with its colour."""
    events = sorted(results.get("events") or [], key=lambda e: (e["start_time"], e.get("end_time") is None))
    windows = []
    for i, e in enumerate(events):
        end = e.get("end_time")
        windows.append(EventWindow(i + 1, str(e.get("event_type", "event")), str(e.get("target") or ""),
                                   float(e["start_time"]), None if end is None else float(end),
                                   EVENT_COLOURS[i % len(EVENT_COLOURS)]))
    return windows


def _tag_levels(windows: list[EventWindow], x_range: float, x: XAxis = TIME) -> list[int]:
    """Vertical level of each window's number tag: starts too close to a tag on a level move down one."""
    gap = 0.035 * x_range
    last: list[float] = []  # per level: the start of the last tag placed there
    levels = []
    for w in windows:
        start = x(w.start)
        level = next((i for i, at in enumerate(last) if start - at >= gap), len(last))
        if level == len(last):
            last.append(start)
        last[level] = start
        levels.append(level)
    return levels


def shade_events(ax, windows: list[EventWindow], x_end: float, *, tags: bool = True, x: XAxis = TIME) -> None:
    """Shade each event window on ax (a dashed line where the event has no end); tags: number each one
    at the top of the axes (do it on the top panel of a figure only)."""
    for w in windows:
        if w.end is None:
            ax.axvline(x(w.start), color=w.colour, linestyle="--", linewidth=2.2, zorder=1.5, gid=w.gid)
        else:
            # a pale fill and a thin solid edge: overlapping windows stay apart
            ax.axvspan(x(w.start), x(w.end), facecolor=to_rgba(w.colour, SPAN_ALPHA),
                       edgecolor=to_rgba(w.colour, 0.9), linewidth=0.9, zorder=0, gid=w.gid)
    if not tags:
        return
    for w, level in zip(windows, _tag_levels(windows, x_end, x), strict=True):
        ax.annotate(str(w.number), xy=(x(w.start), 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -4 - 17 * level), textcoords="offset points", ha="left", va="top",
                    fontsize=9, fontweight="bold", zorder=5, annotation_clip=False,
                    bbox={"boxstyle": "round,pad=0.25", "facecolor": w.colour, "edgecolor": "0.3",
                          "linewidth": 0.6})


def add_event_legend(fig: Figure, windows: list[EventWindow]) -> None:
    """Below the figure: each number's event type, target and window."""
    if not windows:
        return
    handles = [Line2D([], [], color=w.colour, linestyle="--", linewidth=2.2) if w.end is None
               else Patch(facecolor=w.colour, alpha=min(1.0, 2 * SPAN_ALPHA), linewidth=0) for w in windows]
    fig.legend(handles, [w.label for w in windows], loc="outside lower center", ncols=min(2, len(windows)),
               fontsize=9, title="Scenario events (shaded windows; dashed line: no end)", title_fontsize=9,
               frameon=False)


# -- helpers ---------------------------------------------------------------------------------------

def _seconds(t: float) -> str:
    """A time as a label: to the hundredth of a second, no trailing zeros (a short run's 0.5 s stays 0.5)."""
    return f"{round(t, 2):g}"


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _run_end(results: dict, samples: dict | None = None) -> float:
    """The x-axis end: the last round, sample or finite event end."""
    ends = [0.0]
    ends += [_num(r.get("end_time")) for r in results.get("rounds") or []]
    for series in (samples or {}).values():
        ends += [_num(t) for t, _ in series]
    for e in results.get("events") or []:
        ends += [_num(e.get("start_time")), _num(e.get("end_time"))]
    end = max((x for x in ends if math.isfinite(x)), default=0.0)
    return end if end > 0 else 1.0


def _title(results: dict, what: str) -> str:
    name = results.get("scenario_name") or results.get("scenario_id") or "run"
    seed = results.get("seed")
    return f"{name} (seed {seed}): {what}" if seed is not None else f"{name}: {what}"


def _figure(panels: int, title: str, n_events: int, *, height: float = PANEL_HEIGHT, width: float = WIDTH,
            x: XAxis = TIME) -> tuple[Figure, list]:
    legend_rows = math.ceil(n_events / 2)
    fig = Figure(figsize=(width, 0.9 + height * panels + (0.45 + 0.22 * legend_rows if n_events else 0)),
                 dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0])
    fig.suptitle(title, fontsize=12, fontweight="bold")
    for ax in axes:
        ax.grid(True, color="0.88", linewidth=0.7, zorder=0)
        ax.set_axisbelow(True)
    axes[-1].set_xlabel(x.label)
    if x.rounds:
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def _finish(fig: Figure, axes: list, windows: list[EventWindow], x_end: float, x: XAxis = TIME) -> Figure:
    for i, ax in enumerate(axes):
        shade_events(ax, windows, x_end, tags=i == 0, x=x)
        ax.set_xlim(0, x_end * 1.015)  # room for the last round's marker
    add_event_legend(fig, windows)
    return fig


def _headroom(windows: list[EventWindow], x_end: float, x: XAxis = TIME) -> float:
    """Fraction of an axes' height to leave free at the top for the event tags."""
    if not windows:
        return 0.05
    return 0.08 + 0.07 * (max(_tag_levels(windows, x_end, x)) + 1)


def _frame(results: dict, samples: dict | None, x_axis: str) -> tuple[list[EventWindow], XAxis, float]:
    """What every figure of a run shares: its event windows, its x-axis and where that axis ends."""
    x = x_axis_for(results, x_axis)
    return event_windows(results), x, x(_run_end(results, samples))


# -- gates -----------------------------------------------------------------------------------------

# gate metric (an execution_summary key, or a metrics_analysis metric) -> the panel that shows it
SUMMARY_PANELS = {"final_accuracy": "accuracy", "final_loss": "loss", "avg_network_latency": "network_latency_ms",
                  "max_network_latency": "network_latency_ms"}
METRIC_PANELS = {"accuracy": "accuracy", "loss": "loss", "round_duration_seconds": "round_duration",
                 "network_latency_ms": "network_latency_ms",
                 "network_bandwidth_utilization": "network_bandwidth_utilization",
                 "network_packet_loss": "network_packet_loss"}
LEVELS = ("final", "min", "max", "mean")  # a metric summary's levels; its trend is a slope, not drawn


def parse_gates(gates: Iterable[str | Gate]) -> list[Gate]:
    """Gates as given (expressions or parsed), the last one per metric and statistic, as merge_gates keeps them."""
    parsed = [g if isinstance(g, Gate) else parse_gate(g) for g in gates or ()]
    return list({g.subject: g for g in parsed}.values())


def gate_panel(metric: str) -> str | None:
    """The panel a gate's metric is drawn on, or None: execution_summary levels (final_accuracy, ...) and
    metrics_analysis.<metric>[.<link group>].<final|min|max|mean> of a metric a panel shows."""
    parts = metric.split(".")
    if parts[0] == "execution_summary":
        parts = parts[1:]
    if len(parts) == 1:
        return SUMMARY_PANELS.get(parts[0])
    if parts[0] == "metrics_analysis" and len(parts) in (3, 4) and parts[-1] in LEVELS:
        return METRIC_PANELS.get(parts[1])
    return None


def draw_gates(ax, gates: list[Gate], panel: str, scale: float = 1.0) -> None:
    """A dashed line at each gate's threshold on the panel showing its metric, labelled with the gate;
    the y-range grows to show it."""
    for gate in gates:
        if gate_panel(gate.metric) != panel:
            continue
        y = gate.threshold * scale
        ax.axhline(y, color="0.15", linestyle=(0, (6, 3)), linewidth=1.3, zorder=4, gid=f"gate:{gate.metric}")
        ax.annotate(str(gate), xy=(0.0, y), xycoords=("axes fraction", "data"), xytext=(4, 2),
                    textcoords="offset points", ha="left", va="bottom", fontsize=8.5, color="0.1", zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        low, high = ax.get_ylim()
        if y > high * 0.92:
            ax.set_ylim(low, y * 1.15)


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, **SAVE_KWARGS)


# -- figures of one run ----------------------------------------------------------------------------

def accuracy_loss_figure(results: dict, samples: dict | None = None, *, x_axis: str = "time",
                         gates: Iterable[str | Gate] = ()) -> Figure | None:
    """Test accuracy (top) and loss (bottom) per round, at the round's end."""
    rounds = results.get("rounds") or []
    if not any(math.isfinite(_num(r.get("accuracy"))) or math.isfinite(_num(r.get("loss"))) for r in rounds):
        return None
    windows, x, x_end = _frame(results, samples, x_axis)
    over = "rounds" if x.rounds else "scenario time"
    fig, (ax_acc, ax_loss) = _figure(2, _title(results, f"accuracy and loss over {over}"), len(windows),
                                     height=3.2, x=x)
    t = x.many(_num(r["end_time"]) for r in rounds)
    acc = [_num(r.get("accuracy")) for r in rounds]
    loss = [_num(r.get("loss")) for r in rounds]
    ax_acc.plot(t, acc, color="tab:blue", marker="o", markersize=4, linewidth=1.6, label="test accuracy (per round)")
    ax_loss.plot(t, loss, color="tab:red", marker="s", markersize=4, linewidth=1.6, label="test loss (per round)")
    kept = [i for i, r in enumerate(rounds) if r.get("aggregated") is False]
    if kept:
        for ax, ys in ((ax_acc, acc), (ax_loss, loss)):
            ax.plot([t[i] for i in kept], [ys[i] for i in kept], linestyle="none", marker="o", markersize=9,
                    markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.3,
                    label="round not aggregated (global model kept)")
    top = 1.0 / (1 - _headroom(windows, x_end, x))
    ax_acc.set_ylim(0, top)
    ax_acc.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax_acc.set_ylabel("Test accuracy (fraction, 0\u20131)")
    finite = [v for v in loss if math.isfinite(v)]
    ax_loss.set_ylim(0, (max(finite) if finite else 1.0) * top * 1.05 or 1.0)
    ax_loss.set_ylabel("Test loss (cross-entropy)")
    gates = parse_gates(gates)
    draw_gates(ax_acc, gates, "accuracy")
    draw_gates(ax_loss, gates, "loss")
    ax_acc.legend(loc="lower right", fontsize=9)
    ax_loss.legend(loc="lower right" if finite and finite[-1] > finite[0] else "upper right", fontsize=9)
    return _finish(fig, [ax_acc, ax_loss], windows, x_end, x)


# a client's part in a round -> (legend label, colour); the participation chart and the rounds' stacked bars
PARTICIPATION = {"accepted": ("update accepted", "tab:blue"),
                 "rejected": ("update rejected by policy", "tab:red"),
                 "straggler": ("straggler or failed (no update in time)", "tab:orange")}
ABSENT_LABEL = "not selected (away, cut off or not drawn)"


def _byte_unit(nbytes: float) -> tuple[float, str]:
    """The decimal unit that keeps a byte count readable."""
    for size, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if nbytes >= size:
            return size, unit
    return 1.0, "B"


def rounds_figure(results: dict, samples: dict | None = None, *, x_axis: str = "time",
                  gates: Iterable[str | Gate] = ()) -> Figure | None:
    """Round duration (top), who took part (middle, stacked) and the bytes moved so far (bottom), one bar
    per round over its span."""
    rounds = results.get("rounds") or []
    if not rounds:
        return None
    windows, x, x_end = _frame(results, samples, x_axis)
    fig, (ax_dur, ax_part, ax_bytes) = _figure(3, _title(results, "round duration, participation and traffic"),
                                               len(windows), height=2.8, x=x)
    start = [_num(r["start_time"]) for r in rounds]
    end = [_num(r["end_time"]) for r in rounds]
    dur = [e - s for s, e in zip(start, end, strict=True)]
    x0, x1 = x.many(start), x.many(end)
    # the duration as a segment over the round's own span, a marker at its middle
    mid = [(a + b) / 2 for a, b in zip(x0, x1, strict=True)]
    ax_dur.hlines(dur, x0, x1, color="tab:blue", linewidth=2.5, zorder=2)
    ax_dur.plot(mid, dur, color="tab:blue", marker="o", markersize=4, linewidth=0.8, zorder=3,
                label="round duration (segment: the round's span)")
    kept = [i for i, r in enumerate(rounds) if r.get("aggregated") is False]
    if kept:
        ax_dur.plot([mid[i] for i in kept], [dur[i] for i in kept], linestyle="none", marker="o", markersize=9,
                    markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.3, zorder=4,
                    label="round not aggregated (global model kept)")
    finite = [d for d in dur if math.isfinite(d)]
    top = 1.0 / (1 - _headroom(windows, x_end, x))
    ax_dur.set_ylim(0, (max(finite) if finite else 1.0) * top)
    ax_dur.set_ylabel("Round duration (s)")
    draw_gates(ax_dur, parse_gates(gates), "round_duration")
    ax_dur.legend(loc="lower right", fontsize=9, framealpha=0.95)

    # bars 70% of the round wide, centred on it, so the event shading shows between them
    left = [a + 0.15 * (b - a) for a, b in zip(x0, x1, strict=True)]
    width = [0.7 * (b - a) for a, b in zip(x0, x1, strict=True)]
    rejected = [len(r.get("rejected") or []) for r in rounds]
    accepted = [len(r.get("participants") or []) - n for r, n in zip(rounds, rejected, strict=True)]
    stragglers = [len(r.get("stragglers") or []) for r in rounds]
    bottom = [0] * len(rounds)
    for counts, status in ((accepted, "accepted"), (rejected, "rejected"), (stragglers, "straggler")):
        label, colour = PARTICIPATION[status]
        ax_part.bar(left, counts, width=width, bottom=bottom, align="edge", color=colour, label=label, zorder=2)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax_part.set_ylim(0, max(max(bottom), 1) * 1.45)  # the legend sits above the bars
    ax_part.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_part.set_ylabel("Clients per round (count)")
    ax_part.legend(loc="upper right", fontsize=9, ncols=3, framealpha=0.95)

    # bytes are counted when a round ends: a step there, from 0 at the first round's start
    up = np.cumsum([_num(r.get("bytes_up")) for r in rounds])
    down = np.cumsum([_num(r.get("bytes_down")) for r in rounds])
    size, unit = _byte_unit(max(float(up[-1] + down[-1]), 0.0))
    xs = [x0[0], *x1]
    for ys, style, label in ((up + down, {"color": "tab:purple", "linewidth": 2.0}, "uploads + downloads"),
                             (down, {"color": "tab:cyan", "linewidth": 1.2, "linestyle": "--"}, "downloads"),
                             (up, {"color": "tab:olive", "linewidth": 1.2, "linestyle": ":"}, "uploads")):
        ax_bytes.plot(xs, [0.0, *(ys / size)], drawstyle="steps-post", marker="o", markersize=3,
                      markevery=list(range(1, len(xs))), label=label, zorder=3, **style)
    ax_bytes.set_ylim(0, float(up[-1] + down[-1]) / size * 1.1 or 1.0)
    ax_bytes.set_ylabel(f"Traffic so far ({unit})")
    ax_bytes.legend(loc="upper left", fontsize=9, framealpha=0.95)
    return _finish(fig, [ax_dur, ax_part, ax_bytes], windows, x_end, x)


def participation_grid(results: dict) -> tuple[list[str], list[dict[str, str]]]:
    """The clients that appear in any round, in number order, and per round each one's part in it
    ('accepted', 'rejected' or 'straggler'; a client missing from a round's dict was not selected)."""
    grid = []
    for r in results.get("rounds") or []:
        rejected = set(r.get("rejected") or [])
        cells = {c: "straggler" for c in r.get("stragglers") or []}
        cells.update({c: "rejected" if c in rejected else "accepted" for c in r.get("participants") or []})
        grid.append(cells)
    return by_client_number({c for cells in grid for c in cells}), grid


def participation_figure(results: dict, samples: dict | None = None, *, x_axis: str = "time",
                         gates: Iterable[str | Gate] = ()) -> Figure | None:
    """Clients (rows) x rounds: which client took part in which round, how, and which sat it out, over the
    shaded event windows, so a partition or a failure shows as a gap in its clients' rows."""
    clients, grid = participation_grid(results)
    if not clients:
        return None
    rounds = results["rounds"]
    windows, x, x_end = _frame(results, samples, x_axis)
    height = min(max(0.3 * len(clients), 2.0), 9.0)
    fig, (ax,) = _figure(1, _title(results, "client participation per round"), len(windows), height=height,
                         width=WIDTH + 2.0, x=x)
    row = {c: i for i, c in enumerate(clients)}
    cells: dict[str, dict[str, list]] = {s: {} for s in [*PARTICIPATION, "absent"]}
    for r, parts in zip(rounds, grid, strict=True):
        a, b = x(_num(r["start_time"])), x(_num(r["end_time"]))
        span = (a + 0.06 * (b - a), 0.88 * (b - a))  # gaps between rounds and rows: the event shading shows
        for c in clients:
            cells[parts.get(c, "absent")].setdefault(c, []).append(span)
    styles = {s: {"facecolor": colour, "edgecolor": "none"} for s, (_, colour) in PARTICIPATION.items()}
    styles["absent"] = {"facecolor": "none", "edgecolor": "0.65", "linewidth": 0.7}
    for status, by_client in cells.items():
        for c, spans in by_client.items():
            ax.broken_barh(spans, (row[c] - 0.28, 0.56), zorder=2, gid=f"participation:{status}:{c}",
                           **{f"{k}s": v for k, v in styles[status].items()})
    # room above the first row for the event tags (17 points a row of tags), in rows of this chart's height
    levels = max(_tag_levels(windows, x_end, x)) + 1 if windows else 0
    room = (6 + 17 * levels) / 72 * len(clients) / height if windows else 0.0
    ax.set_ylim(len(clients) - 0.5, -0.5 - room)
    step = math.ceil(len(clients) / 40)
    ax.set_yticks(range(0, len(clients), step), clients[::step], fontsize=8 if len(clients) > 20 else 9)
    ax.set_ylabel("Client")
    ax.grid(False)
    labels = {**{s: label for s, (label, _) in PARTICIPATION.items()}, "absent": ABSENT_LABEL}
    ax.legend([Patch(**styles[s]) for s in labels], list(labels.values()), loc="upper left",  # every status, always
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9, title="Client in the round", title_fontsize=9)
    return _finish(fig, [ax], windows, x_end, x)


# metric, axis label, scale, how a sample holds (the state after it: latency, loss; the mean over the
# window before it: utilisation, which backends average since their previous sample)
NETWORK_PANELS = (("network_latency_ms", "Link latency (ms)", 1.0, "steps-post"),
                  ("network_bandwidth_utilization", "Link utilisation (%)", 100.0, "steps-pre"),
                  ("network_packet_loss", "Link packet loss (%)", 100.0, "steps-post"))
# a link group's series is `<metric>.<group>` in the samples (collector.group_metric)
LINK_GROUP_LINES = (("client_links", "mean over client links", {"color": "tab:blue", "linewidth": 1.6}),
                    ("server_links", "mean over server links", {"color": "tab:orange", "linewidth": 1.6,
                                                                "linestyle": "--"}))
ALL_LINKS_LINE = ("mean over all links", {"color": "0.35", "linewidth": 1.0, "linestyle": ":"})


def network_figure(results: dict, samples: dict, *, x_axis: str = "time",
                   gates: Iterable[str | Gate] = ()) -> Figure | None:
    """Latency, bandwidth utilisation and packet loss, stacked: per link group (client links, server
    links) where the samples have them, with the mean over all links beside."""
    if not any(samples.get(key) for key, *_ in NETWORK_PANELS):
        return None
    windows, x, x_end = _frame(results, samples, x_axis)
    over = "rounds" if x.rounds else "scenario time"
    fig, axes = _figure(3, _title(results, f"network conditions over {over} (sampled)"), len(windows),
                        height=2.3, x=x)
    top = 1.0 / (1 - _headroom(windows, x_end, x))
    gates = parse_gates(gates)
    for ax, (key, label, scale, steps) in zip(axes, NETWORK_PANELS, strict=True):
        groups = [(samples.get(f"{key}.{group}"), name, style) for group, name, style in LINK_GROUP_LINES]
        groups = [line for line in groups if line[0]]
        # beside the groups, the mean over all links: links between switches are in neither group
        whole = ALL_LINKS_LINE if groups else (None, {"color": "tab:blue", "linewidth": 1.5})
        lines = [*groups, (samples.get(key) or [], *whole)]
        high, sampled = 0.0, False
        for series, name, style in lines:
            t = x.many(_num(p[0]) for p in series)
            v = [_num(p[1]) * scale for p in series]
            ax.plot(t, v, drawstyle=steps, label=name, zorder=3, **style)
            high = max([high, *(y for y in v if math.isfinite(y))])
            sampled = sampled or bool(series)
        if scale == 100.0:
            ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        ax.set_ylim(0, (high if high > 0 else 1.0) * top * 1.05)
        ax.set_ylabel(label)
        draw_gates(ax, gates, key, scale)
        note = "not sampled" if not sampled else "0 throughout the run" if high == 0 else None
        if note:
            ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", color="0.35", fontsize=10,
                    zorder=5, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    if any(axes[0].get_legend_handles_labels()):  # above the top panel, clear of the data and the tags
        axes[0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=9, frameon=False,
                       borderaxespad=0.1)
    return _finish(fig, axes, windows, x_end, x)


def _trust_groups(history: list[dict]) -> list[tuple[list[str], list[float]]]:
    """Clients with identical trust histories share one line (many stay at 1.0 throughout)."""
    clients: list[str] = []
    for point in history:
        clients += [c for c in point["trust"] if c not in clients]
    groups: dict[tuple, list[str]] = {}
    for c in clients:
        series = tuple(_num(point["trust"].get(c)) for point in history)
        groups.setdefault(series, []).append(c)
    return [(names, list(series)) for series, names in groups.items()]


def _client_list(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    numbers = [n.split("_", 1)[1] for n in names if n.startswith("client_")]
    if len(numbers) == len(names):
        return "clients " + ", ".join(numbers)
    return ", ".join(names)


def trust_figure(results: dict, samples: dict | None = None, *, x_axis: str = "time",
                 gates: Iterable[str | Gate] = ()) -> Figure | None:
    """Each client's trust score over time; clients whose scores never differ share a line."""
    history = (results.get("policy_metrics") or {}).get("trust_history") or []
    if not history:
        return None
    windows, x, x_end = _frame(results, samples, x_axis)
    over = "rounds" if x.rounds else "scenario time"
    fig, (ax,) = _figure(1, _title(results, f"client trust scores over {over}"), len(windows), height=4.5,
                         width=WIDTH + 2.0, x=x)
    t = x.many(_num(p["time"]) for p in history)
    groups = _trust_groups(history)
    # lowest final trust first in the legend: the clients the policy distrusts are read first
    groups.sort(key=lambda g: (g[1][-1] if math.isfinite(g[1][-1]) else math.inf, g[0][0]))
    for i, (names, series) in enumerate(groups):
        ax.plot(t, series, color=LINE_COLOURS[i % len(LINE_COLOURS)],
                linestyle=LINE_STYLES[(i // len(LINE_COLOURS)) % len(LINE_STYLES)],
                marker="o", markersize=3.5, linewidth=1.6 + (0.8 if len(names) > 1 else 0), zorder=3,
                label=f"{_client_list(names)} (final {series[-1]:.2f})")
    top = 1.0 / (1 - _headroom(windows, x_end, x))
    ax.set_ylim(0, 1.0 * top)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("Trust score (0\u20131)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9,
              title="Client (final trust)", title_fontsize=9)
    return _finish(fig, [ax], windows, x_end, x)


FIGURES = (("accuracy_loss.png", accuracy_loss_figure), ("network.png", network_figure),
           ("participation.png", participation_figure), ("rounds.png", rounds_figure), ("trust.png", trust_figure))


def build_figures(results: dict, samples: dict, *, x_axis: str = "time",
                  gates: Iterable[str | Gate] = ()) -> dict[str, Figure]:
    """file name -> Figure for every plot whose data exists (no file written). x_axis: "time" (scenario
    seconds) or "rounds"; gates: the run's gate expressions, drawn on the panels of their metrics."""
    gates = parse_gates(gates)
    figures = {}
    for name, build in FIGURES:
        fig = build(results, samples or {}, x_axis=x_axis, gates=gates)
        if fig is not None:
            figures[name] = fig
    return figures


def plot_run(results: dict, samples: dict[str, list[list[float]]], folder: Path, *, x_axis: str = "time",
             gates: Iterable[str | Gate] = ()) -> list[str]:
    """Write the PNGs of one run into folder (see build_figures); return the file names written, in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in build_figures(results, samples, x_axis=x_axis, gates=gates).items():
        _save(fig, folder / name)
        written.append(name)
    return written


# -- several runs ----------------------------------------------------------------------------------

def _common_events(runs: list[dict]) -> dict:
    """An events-only results dict with the events every run shares (same type, target and times)."""
    def key(e):
        return e.get("event_type"), e.get("target"), e.get("start_time"), e.get("end_time")
    first = runs[0].get("events") or [] if runs else []
    shared = [e for e in first if all(key(e) in {key(o) for o in r.get("events") or []} for r in runs[1:])]
    return {"events": shared}


def comparison_figure(results: dict[str, dict]) -> Figure:
    """Test accuracy (top) and loss (bottom) of several runs against scenario time, one line per run."""
    runs = list(results.values())
    shared = _common_events(runs)
    windows = event_windows(shared)
    x_end = max([_run_end(r) for r in runs] + [_run_end(shared)])
    names = sorted({str(r.get("scenario_name")) for r in runs if r.get("scenario_name")})
    subject = names[0] if len(names) == 1 else f"{len(runs)} runs"
    fig, (ax_acc, ax_loss) = _figure(2, f"{subject}: test accuracy and loss over scenario time, runs compared",
                                     len(windows), height=3.2)
    high = 0.0
    for i, (label, run) in enumerate(results.items()):
        rounds = run.get("rounds") or []
        t = [_num(r["end_time"]) for r in rounds]
        style = {"color": LINE_COLOURS[i % len(LINE_COLOURS)],
                 "linestyle": LINE_STYLES[(i // len(LINE_COLOURS)) % len(LINE_STYLES)],
                 "marker": "o", "markersize": 3, "linewidth": 1.5, "label": str(label)}
        ax_acc.plot(t, [_num(r.get("accuracy")) for r in rounds], **style)
        loss = [_num(r.get("loss")) for r in rounds]
        ax_loss.plot(t, loss, **style)
        high = max([high] + [v for v in loss if math.isfinite(v)])
    top = 1.0 / (1 - _headroom(windows, x_end))
    ax_acc.set_ylim(0, top)
    ax_acc.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax_acc.set_ylabel("Test accuracy (fraction, 0\u20131)")
    ax_loss.set_ylim(0, (high or 1.0) * top * 1.05)
    ax_loss.set_ylabel("Test loss (cross-entropy)")
    ax_acc.legend(loc="lower right", fontsize=9, title="Run", title_fontsize=9, framealpha=0.95,
                  ncols=1 if len(runs) <= 6 else 2)
    return _finish(fig, [ax_acc, ax_loss], windows, x_end)


def plot_comparison(results: dict[str, dict], path: Path) -> Path:
    """Overlay several runs (label -> results) on one figure: test accuracy over scenario time (top), and loss
    (bottom); one line per run, legend with the labels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(comparison_figure(results), path)
    return path


def seeds_figure(runs: list[dict], gates: Iterable[str | Gate] = ()) -> Figure:
    """Test accuracy per round over the runs of several seeds: each seed a thin line, their mean a thick
    one, the band from the lowest to the highest seed shaded; the accuracy gates drawn."""
    name = runs[0].get("scenario_name", "scenario")
    fig, (ax,) = _figure(1, f"{name}: test accuracy over {len(runs)} seeds (mean, band from lowest to highest)", 0,
                         height=3.6)
    by_round: dict[int, list[float]] = {}
    for i, run in enumerate(runs):
        rounds = run.get("rounds") or []
        ax.plot([r["round"] for r in rounds], [_num(r.get("accuracy")) for r in rounds], linewidth=0.9, alpha=0.7,
                color=LINE_COLOURS[i % len(LINE_COLOURS)], label=f"seed {run.get('seed')}")
        for r in rounds:
            by_round.setdefault(r["round"], []).append(_num(r.get("accuracy")))
    xs = sorted(by_round)
    full = [x for x in xs if len(by_round[x]) == len(runs)]  # rounds every seed reached
    ax.fill_between(full, [min(by_round[x]) for x in full], [max(by_round[x]) for x in full], color="0.55",
                    alpha=0.25, linewidth=0, label="lowest to highest")
    ax.plot(full, [sum(by_round[x]) / len(runs) for x in full], color="0.1", linewidth=2.2, label="mean")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Test accuracy (fraction, 0\u20131)")
    ax.set_xlabel("Round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    draw_gates(ax, parse_gates(gates), "accuracy")
    ax.legend(loc="lower right", fontsize=9, framealpha=0.95, ncols=1 if len(runs) <= 6 else 2)
    return fig


def plot_seeds(runs: list[dict], path: Path, gates: Iterable[str | Gate] = ()) -> Path:
    """seeds_figure() as a PNG at path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(seeds_figure(runs, gates), path)
    return path
