"""RunSettings: how a run is made (seed, backend and its options, executor, threads, reports, gates),
as opposed to what the scenario is. One table, OPTIONS, declares each setting once; the pytest options
(`--flopynet-<name>`), their ini keys (`flopynet_<name>`) and the `flopynet run` flags are generated
from it, and one precedence rule (RunSettings.seed_for, backend_for) decides what a run uses."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from .errors import FlopynetError
from .model.gates import Gate, GateSyntaxError, merge_gates, parse_gate
from .seeds import derive_seed

EXECUTORS = {  # how clients train, by the name --flopynet-executor takes (fl/executors builds them)
    "auto": "batched where it pays (on a GPU; on a CPU from 3 clients of a model with light layers), else sequential",
    "sequential": "one client after another",
    "batched": "every client of a round at once (torch.func vmap; CUDA graphs on a GPU)",
    "compiled": "batched, with torch.compile and, on a GPU, 3x3 convolutions as one Triton kernel for all clients "
                "(a slow first round per group shape, faster rounds after)",
    "nodes": "the FL server and each client as a process of its own (fl/node.py) exchanging weights over TCP: in "
             "their namespaces through OVS on netns (the round's real traffic and time), over loopback on sim",
}
EXECUTORS_HELP = "how clients train: " + "; ".join(f"{name}: {what}" for name, what in EXECUTORS.items())
BACKEND_NAMES = ("sim", "netns", "gns3")  # the built-in ones; network.BACKENDS also has other packages'


def backend_names() -> tuple[str, ...]:
    """The built-in backends and those other packages register (entry-point names: nothing imported)."""
    return (*BACKEND_NAMES, *(ep.name for ep in entry_points(group="pytest_flopynet.backends")
                              if ep.name not in BACKEND_NAMES))


def executor_names() -> tuple[str, ...]:
    """The built-in executors and those other packages register (entry-point names: nothing imported)."""
    return (*EXECUTORS, *(ep.name for ep in entry_points(group="pytest_flopynet.executors") if ep.name not in EXECUTORS))


class SettingError(FlopynetError):
    """A setting's value that cannot be used; the message names the option, ini key and reason."""


def _checked_gates(gates, where: str) -> tuple[str, ...]:
    """Gates as given, each parsed now: a typo is a usage error before anything runs."""
    for gate in gates:
        try:
            parse_gate(gate)
        except GateSyntaxError as exc:
            raise SettingError(f"{where}: {exc}") from None
    return tuple(gates)


def _count(text: str) -> int:
    """A whole number of 1 or more."""
    n = int(text)
    if n < 1:
        raise ValueError(text)
    return n


def _workers(text: str) -> int | str:
    """auto, ray, or a whole number of 1 or more."""
    text = str(text).strip().lower()
    return text if text in ("auto", "ray") else _count(text)


def _truthy(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Option:
    """One setting: its RunSettings field, help, the ini key's default text, and how text becomes a value."""

    name: str
    help: str
    default: str = ""  # the ini default (text); "" means unset
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None  # a callable: read when checked
    cli: dict[str, Any] = field(default_factory=dict)  # argparse keywords of the `flopynet run` flag; None: no flag

    def value(self, text: Any) -> Any:
        if text in (None, ""):
            text = self.default
        if text in (None, ""):
            return None
        choices = self.choices() if callable(self.choices) else self.choices
        if choices and str(text) not in choices:
            raise SettingError(f"--flopynet-{self.name.replace('_', '-')} / ini flopynet_{self.name}: {text!r} is not "
                               f"one of {', '.join(choices)}")
        try:
            return self.parse(text)
        except (TypeError, ValueError):
            kind = {int: "an integer", float: "a number", _count: "a whole number of 1 or more",
                    _workers: "auto, ray or a whole number of 1 or more"}.get(self.parse, "a valid value")
            raise SettingError(f"--flopynet-{self.name.replace('_', '-')} / ini flopynet_{self.name}: {text!r} is "
                               f"not {kind}") from None


OPTIONS: tuple[Option, ...] = (
    Option("seed", "run seed; each test derives its own from it and its id", "0", int,
           cli={"type": int, "help": "seed of the run (beats the scenario file's own seed; default: the file's, else 0)"}),
    Option("backend", "network backend for every scenario: sim, netns, gns3 or another package's (default: the "
                      "scenario's own backend, else sim)", choices=backend_names, cli={}),
    Option("reports", "folder for each scenario's results, metrics and plots", "reports", Path,
           cli={"default": "reports", "help": "folder for results, metrics and the resolved scenario ('' to write "
                                              "none)"}),
    Option("data_dir", "folder holding local data sets (CIFAR, MNIST)", parse=Path, cli={}),
    Option("executor", EXECUTORS_HELP, "auto", choices=executor_names, cli={"default": "auto"}),
    Option("threads", "clients each test trains at once, each on one torch thread (metrics are the same for any "
                      "count and any -n)", "1", int,
           cli={"type": int, "default": 1, "help": "clients trained at once, each on one torch thread (default 1; "
                                                   "results are byte-identical for any count: docs/measurements.md)"}),
    Option("seeds", "runs of each scenario, one per seed (the test's seed, + 1, ...); gates may then take "
                    "mean(metric), median, min, max, std, ci95_low or ci95_high over them, and a plain gate holds for "
                    "every seed (default: @pytest.mark.seeds(N), else the scenario's seeds, else 1)", parse=_count,
           cli=None),
    Option("seeds_workers", "seeds of a test that run at once, the first in the test's process and the others in "
                            "processes of their own: a number (1: one after another), ray (each a Ray task, on the "
                            "cluster at RAY_ADDRESS, else a local one) or auto (default: the cores, shared among xdist "
                            "workers). A test whose body adds callbacks, or a run with flopynet hook implementations, "
                            "runs them one after another. Metrics are the same either way", "auto", parse=_workers,
           cli=None),
    Option("size", "largest scenarios to run: ci (default: full-size scenarios skip, saying so) or full (they run, "
                   "each still skipping where the machine lacks its cores, memory or data)", "ci", choices=("ci", "full"),
           cli=None),
    Option("plot_axis", "x axis of the plots: time (scenario seconds) or rounds", "time", choices=("time", "rounds"),
           cli={"default": "time"}),
    Option("time_scale", "real backends (netns, gns3): scenario seconds per real second (default 1)", parse=float,
           cli={"type": float, "help": "real backends: scenario seconds per real second (default 1)"}),
    Option("gns3_url", "GNS3 server for the gns3 backend (default: the scenario's gns3_template url, else "
                       "http://127.0.0.1:3080)", cli={"help": "GNS3 server for the gns3 backend"}),
    Option("gns3_templates", "gns3 backend: GNS3 templates per role, 'switch=NAME,client=NAME,...' (over the "
                             "scenario's gns3_template)",
           cli={"help": "GNS3 templates per role: 'switch=NAME,client=NAME,...'"}),
    Option("gns3_keep", "gns3 backend: keep each GNS3 project after its test, for debugging (1/true)", parse=_truthy,
           cli={"action": "store_true", "help": "keep the GNS3 project after the run (debugging)"}),
    Option("gns3_link_delay", "gns3 backend: set each link's own latency as a GNS3 delay filter, which passes one "
                              "frame per delay (1/true; default: only latency events)", parse=_truthy,
           cli={"action": "store_true", "help": "set the links' own latency as GNS3 delay filters"}),
)
GATE_HELP = "gate 'metric op number' for every scenario (repeatable; overrides others per metric)"


@dataclass(frozen=True)
class RunSettings:
    """The settings of a run. `seed_overrides_file`: the seed was given for this run on the command
    line (`flopynet run --seed`), so it beats a scenario file's own seed."""

    seed: int = 0
    backend: str | None = None
    reports: Path | None = Path("reports")
    data_dir: Path | None = None
    executor: str = "auto"
    threads: int | None = None  # clients trained at once (None: 1); pytest and flopynet run keep torch at one thread
    seeds: int | None = None  # runs per scenario (None: the marker's, the scenario's, else 1)
    seeds_workers: int | str = "auto"  # a test's seeds run at once: a count, "ray" or "auto" (testrun.seed_workers)
    size: str = "ci"  # pytest: "ci" skips full-size scenarios
    plot_axis: str = "time"
    time_scale: float | None = None
    gns3_url: str | None = None
    gns3_templates: str | None = None
    gns3_keep: bool = False
    gns3_link_delay: bool = False
    gates: tuple[str, ...] = ()  # over the scenario's own, per metric (ini, then command line)
    seed_overrides_file: bool = False

    # -- the one precedence rule --------------------------------------------------------------
    def seed_for(self, config, test_id: str | None = None) -> int:
        """A seed given for this run on the command line, else the scenario file's seed, else the run's
        seed (under pytest, derived from it and the test id, so xdist workers agree)."""
        if self.seed_overrides_file:
            return self.seed
        if config.seed is not None:
            return config.seed
        return derive_seed(self.seed, test_id) if test_id is not None else self.seed

    def seeds_for(self, config, marked: int | None = None) -> int:
        """How many seeds a scenario runs: the run's (ini, command line), else @pytest.mark.seeds(N), else
        the scenario file's `seeds`, else 1."""
        return self.seeds or marked or config.seeds or 1

    def backend_for(self, config) -> str:
        """The run's backend, else the scenario's, else sim."""
        return self.backend or config.backend or "sim"

    def gates_for(self, config, marked: tuple[str, ...] = ()) -> list[Gate]:
        """The gates a run is judged by, later ones overriding earlier ones per metric: the scenario
        file's, then @pytest.mark.gate's, then the ini key's and the command line's (self.gates)."""
        return merge_gates(config.gates, marked, self.gates)

    def backend_options(self, config) -> dict[str, Any]:
        """What backends read: the scenario's name (they name what they make after it), its GNS3 settings,
        and the run's real-backend options that are set."""
        options: dict[str, Any] = {"label": config.name}
        if config.network_config.gns3_template is not None:
            options["gns3_template"] = config.network_config.gns3_template
        for name in ("time_scale", "gns3_url", "gns3_templates", "gns3_keep", "gns3_link_delay"):
            if getattr(self, name):
                options[name] = getattr(self, name)
        return options

    def but(self, **changes) -> RunSettings:
        return replace(self, **changes)

    # -- pytest ---------------------------------------------------------------------------------
    @staticmethod
    def add_pytest_options(parser) -> None:
        group = parser.getgroup("flopynet", "federated-learning robustness scenarios")
        for opt in OPTIONS:
            group.addoption(f"--flopynet-{opt.name.replace('_', '-')}", dest=f"flopynet_{opt.name}", default=None,
                            help=opt.help)
            parser.addini(f"flopynet_{opt.name}", opt.help, default=opt.default)
        group.addoption("--flopynet-gate", dest="flopynet_gate", action="append", default=[], help=GATE_HELP)
        parser.addini("flopynet_gates", "gates 'metric op number' for every scenario", type="linelist", default=[])

    @classmethod
    def from_pytest(cls, config) -> RunSettings:
        """From --flopynet-<name>, else the ini key flopynet_<name>; raises SettingError on a bad value."""
        values = {}
        for opt in OPTIONS:
            given = config.getoption(f"flopynet_{opt.name}", None)
            values[opt.name] = opt.value(given if given not in (None, []) else config.getini(f"flopynet_{opt.name}"))
        if values["reports"] is not None and not values["reports"].is_absolute():
            values["reports"] = config.rootpath / values["reports"]
        values["gns3_keep"] = bool(values["gns3_keep"])
        values["gns3_link_delay"] = bool(values["gns3_link_delay"])
        values["gates"] = (*_checked_gates(config.getini("flopynet_gates"), "ini flopynet_gates"),
                           *_checked_gates(config.getoption("flopynet_gate") or [], "--flopynet-gate"))
        return cls(**values)

    # -- the command line -----------------------------------------------------------------------
    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        for opt in OPTIONS:
            if opt.cli is None:  # pytest only
                continue
            keywords = {"help": opt.help, **opt.cli}
            if opt.choices:  # argparse says what is wrong, with the choices
                keywords["choices"] = list(opt.choices() if callable(opt.choices) else opt.choices)
            parser.add_argument(f"--{opt.name.replace('_', '-')}", dest=opt.name, **keywords)
        parser.add_argument("--gate", action="append", default=[], help="extra gate 'metric op number' (repeatable)")

    @classmethod
    def from_cli(cls, args: argparse.Namespace) -> RunSettings:
        pytest_only = {opt.name for opt in OPTIONS if opt.cli is None}  # flopynet run's --size means something else
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name) and f.name not in pytest_only}
        values["reports"] = Path(args.reports) if args.reports else None
        values["data_dir"] = Path(args.data_dir) if args.data_dir else None
        values["gates"] = tuple(args.gate)
        values["seed_overrides_file"] = args.seed is not None
        values["seed"] = args.seed if args.seed is not None else 0
        values["gns3_keep"] = bool(args.gns3_keep)
        values["gns3_link_delay"] = bool(args.gns3_link_delay)
        return cls(**values)
