"""PNG plots of one run (accuracy and loss, rounds, network, trust) and of several runs overlaid.

Pure functions: analysis data in, files out. Figures are drawn on ``matplotlib.figure.Figure`` with the
Agg canvas (no pyplot, no global state, safe from threads) and saved without the metadata that varies, so
the same inputs give byte-identical PNGs. Every plot of a run shades the scenario's event windows the same
way (``event_windows`` and ``shade_events``): one colour per event, a numbered tag at the window's start
and a legend below the figure that names each number's event type, target and times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

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
SAVE_KWARGS = {"dpi": DPI, "format": "png", "metadata": {"Software": None}}


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
        when = f"{self.start:.0f}\u2013{self.end:.0f} s" if self.end is not None else f"from {self.start:.0f} s"
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


def _tag_levels(windows: list[EventWindow], x_range: float) -> list[int]:
    """Vertical level of each window's number tag: starts too close to a tag on a level move down one."""
    gap = 0.035 * x_range
    last: list[float] = []  # per level: the start of the last tag placed there
    levels = []
    for w in windows:
        level = next((i for i, x in enumerate(last) if w.start - x >= gap), len(last))
        if level == len(last):
            last.append(w.start)
        last[level] = w.start
        levels.append(level)
    return levels


def shade_events(ax, windows: list[EventWindow], x_end: float, *, tags: bool = True) -> None:
    """Shade each event window on ax (a dashed line where the event has no end); tags: number each one
    at the top of the axes (do it on the top panel of a figure only)."""
    for w in windows:
        if w.end is None:
            ax.axvline(w.start, color=w.colour, linestyle="--", linewidth=2.2, zorder=1.5, gid=w.gid)
        else:
            # a pale fill and a thin solid edge: overlapping windows stay apart
            ax.axvspan(w.start, w.end, facecolor=to_rgba(w.colour, SPAN_ALPHA), edgecolor=to_rgba(w.colour, 0.9),
                       linewidth=0.9, zorder=0, gid=w.gid)
    if not tags:
        return
    for w, level in zip(windows, _tag_levels(windows, x_end), strict=True):
        ax.annotate(str(w.number), xy=(w.start, 1.0), xycoords=("data", "axes fraction"),
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


def _figure(panels: int, title: str, n_events: int, *, height: float = PANEL_HEIGHT,
            width: float = WIDTH) -> tuple[Figure, list]:
    legend_rows = math.ceil(n_events / 2)
    fig = Figure(figsize=(width, 0.9 + height * panels + (0.45 + 0.22 * legend_rows if n_events else 0)),
                 dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0])
    fig.suptitle(title, fontsize=12, fontweight="bold")
    for ax in axes:
        ax.grid(True, color="0.88", linewidth=0.7, zorder=0)
        ax.set_axisbelow(True)
    axes[-1].set_xlabel(TIME_LABEL)
    return fig, axes


def _finish(fig: Figure, axes: list, windows: list[EventWindow], x_end: float) -> Figure:
    for i, ax in enumerate(axes):
        shade_events(ax, windows, x_end, tags=i == 0)
        ax.set_xlim(0, x_end * 1.015)  # room for the last round's marker
    add_event_legend(fig, windows)
    return fig


def _headroom(windows: list[EventWindow], x_end: float) -> float:
    """Fraction of an axes' height to leave free at the top for the event tags."""
    if not windows:
        return 0.05
    return 0.08 + 0.07 * (max(_tag_levels(windows, x_end)) + 1)


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, **SAVE_KWARGS)


# -- figures of one run ----------------------------------------------------------------------------

def accuracy_loss_figure(results: dict, samples: dict | None = None) -> Figure | None:
    """Test accuracy (top) and loss (bottom) per round against the round's end time."""
    rounds = results.get("rounds") or []
    if not any(math.isfinite(_num(r.get("accuracy"))) or math.isfinite(_num(r.get("loss"))) for r in rounds):
        return None
    windows, x_end = event_windows(results), _run_end(results, samples)
    fig, (ax_acc, ax_loss) = _figure(2, _title(results, "accuracy and loss over scenario time"), len(windows),
                                     height=3.2)
    t = [_num(r["end_time"]) for r in rounds]
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
    top = 1.0 / (1 - _headroom(windows, x_end))
    ax_acc.set_ylim(0, top)
    ax_acc.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax_acc.set_ylabel("Test accuracy (fraction, 0\u20131)")
    finite = [v for v in loss if math.isfinite(v)]
    ax_loss.set_ylim(0, (max(finite) if finite else 1.0) * top * 1.05 or 1.0)
    ax_loss.set_ylabel("Test loss (cross-entropy)")
    ax_acc.legend(loc="lower right", fontsize=9)
    ax_loss.legend(loc="lower right" if finite and finite[-1] > finite[0] else "upper right", fontsize=9)
    return _finish(fig, [ax_acc, ax_loss], windows, x_end)


def rounds_figure(results: dict, samples: dict | None = None) -> Figure | None:
    """Round duration (top) and who took part (bottom, stacked), one bar per round at its time span."""
    rounds = results.get("rounds") or []
    if not rounds:
        return None
    windows, x_end = event_windows(results), _run_end(results, samples)
    fig, (ax_dur, ax_part) = _figure(2, _title(results, "round duration and participation"), len(windows),
                                     height=3.0)
    start = [_num(r["start_time"]) for r in rounds]
    dur = [_num(r["end_time"]) - s for r, s in zip(rounds, start, strict=True)]
    # the duration as a segment over the round's own time span, a marker at its middle
    mid = [s + d / 2 for s, d in zip(start, dur, strict=True)]
    ax_dur.hlines(dur, start, [s + d for s, d in zip(start, dur, strict=True)], color="tab:blue", linewidth=2.5,
                  zorder=2)
    ax_dur.plot(mid, dur, color="tab:blue", marker="o", markersize=4, linewidth=0.8, zorder=3,
                label="round duration (segment: the round's time span)")
    kept = [i for i, r in enumerate(rounds) if r.get("aggregated") is False]
    if kept:
        ax_dur.plot([mid[i] for i in kept], [dur[i] for i in kept], linestyle="none", marker="o", markersize=9,
                    markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.3, zorder=4,
                    label="round not aggregated (global model kept)")
    ax_dur.legend(loc="lower right", fontsize=9, framealpha=0.95)
    finite = [d for d in dur if math.isfinite(d)]
    top = 1.0 / (1 - _headroom(windows, x_end))
    ax_dur.set_ylim(0, (max(finite) if finite else 1.0) * top)
    ax_dur.set_ylabel("Round duration (s)")

    # bars 70% of the round wide, centred on it, so the event shading shows between them
    left = [s + 0.15 * d for s, d in zip(start, dur, strict=True)]
    width = [0.7 * d for d in dur]
    rejected = [len(r.get("rejected") or []) for r in rounds]
    accepted = [len(r.get("participants") or []) - n for r, n in zip(rounds, rejected, strict=True)]
    stragglers = [len(r.get("stragglers") or []) for r in rounds]
    bottom = [0] * len(rounds)
    for counts, colour, label in ((accepted, "tab:blue", "update accepted"),
                                  (rejected, "tab:red", "update rejected by policy"),
                                  (stragglers, "tab:orange", "straggler (no update before the deadline)")):
        ax_part.bar(left, counts, width=width, bottom=bottom, align="edge", color=colour, label=label, zorder=2)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax_part.set_ylim(0, max(max(bottom), 1) * 1.45)  # the legend sits above the bars
    ax_part.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_part.set_ylabel("Clients per round (count)")
    ax_part.legend(loc="upper right", fontsize=9, ncols=3, framealpha=0.95)
    return _finish(fig, [ax_dur, ax_part], windows, x_end)


NETWORK_PANELS = (("network_latency_ms", "Mean link latency (ms)", 1.0, "tab:blue"),
                  ("network_bandwidth_utilization", "Mean link utilisation (%)", 100.0, "tab:green"),
                  ("network_packet_loss", "Mean link packet loss (%)", 100.0, "tab:red"))


def network_figure(results: dict, samples: dict) -> Figure | None:
    """Latency, bandwidth utilisation and packet loss from the sampled metrics, stacked."""
    if not any(samples.get(key) for key, *_ in NETWORK_PANELS):
        return None
    windows, x_end = event_windows(results), _run_end(results, samples)
    fig, axes = _figure(3, _title(results, "network conditions over scenario time (sampled)"), len(windows),
                        height=2.3)
    top = 1.0 / (1 - _headroom(windows, x_end))
    for ax, (key, label, scale, colour) in zip(axes, NETWORK_PANELS, strict=True):
        series = samples.get(key) or []
        t = [_num(p[0]) for p in series]
        v = [_num(p[1]) * scale for p in series]
        ax.plot(t, v, color=colour, linewidth=1.5, drawstyle="steps-post")
        finite = [x for x in v if math.isfinite(x)]
        high = max(finite, default=0.0)
        if scale == 100.0:
            ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        ax.set_ylim(0, (high if high > 0 else 1.0) * top * 1.05)
        ax.set_ylabel(label)
        note = "not sampled" if not series else "0 throughout the run" if finite and high == 0 else None
        if note:
            ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", color="0.35", fontsize=10,
                    zorder=5, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    return _finish(fig, axes, windows, x_end)


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


def trust_figure(results: dict, samples: dict | None = None) -> Figure | None:
    """Each client's trust score over time; clients whose scores never differ share a line."""
    history = (results.get("policy_metrics") or {}).get("trust_history") or []
    if not history:
        return None
    windows, x_end = event_windows(results), _run_end(results, samples)
    fig, (ax,) = _figure(1, _title(results, "client trust scores over scenario time"), len(windows), height=4.5,
                         width=WIDTH + 2.0)
    t = [_num(p["time"]) for p in history]
    groups = _trust_groups(history)
    # lowest final trust first in the legend: the clients the policy distrusts are read first
    groups.sort(key=lambda g: (g[1][-1] if math.isfinite(g[1][-1]) else math.inf, g[0][0]))
    for i, (names, series) in enumerate(groups):
        ax.plot(t, series, color=LINE_COLOURS[i % len(LINE_COLOURS)],
                linestyle=LINE_STYLES[(i // len(LINE_COLOURS)) % len(LINE_STYLES)],
                marker="o", markersize=3.5, linewidth=1.6 + (0.8 if len(names) > 1 else 0), zorder=3,
                label=f"{_client_list(names)} (final {series[-1]:.2f})")
    top = 1.0 / (1 - _headroom(windows, x_end))
    ax.set_ylim(0, 1.0 * top)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("Trust score (0\u20131)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9,
              title="Client (final trust)", title_fontsize=9)
    return _finish(fig, [ax], windows, x_end)


FIGURES = (("accuracy_loss.png", accuracy_loss_figure), ("network.png", network_figure),
           ("rounds.png", rounds_figure), ("trust.png", trust_figure))


def build_figures(results: dict, samples: dict) -> dict[str, Figure]:
    """file name -> Figure for every plot whose data exists (no file written)."""
    figures = {}
    for name, build in FIGURES:
        fig = build(results, samples or {})
        if fig is not None:
            figures[name] = fig
    return figures


def plot_run(results: dict, samples: dict[str, list[list[float]]], folder: Path) -> list[str]:
    """Write the PNGs of one run into folder; return the file names written (sorted order of creation)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in build_figures(results, samples).items():
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
