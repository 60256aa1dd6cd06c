"""The `flopynet` command: validate, run, sweep, list, schema, compare, report, calibrate, cleanup, gns3. Errors are one line
and a non-zero exit."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from .commands import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, one_line_warning
from .errors import FlopynetError, UnavailableError
from .settings import RunSettings


def command(target: str):
    """The function of a subcommand, "module:function" in pytest_flopynet.commands, imported now:
    each command's module imports only what that command needs (no torch for `flopynet schema`)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"pytest_flopynet.commands.{module}"), name)


def _bounded(kind, low: float, high: float = float("inf")):
    """An argparse type: a number of `kind` within [low, high], else one line saying so."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g} to {high:g}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flopynet", description="Federated-learning robustness scenarios.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check scenario files")
    v.add_argument("files", nargs="+")
    v.set_defaults(fn="validate:cmd_validate")
    s = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    s.set_defaults(fn="catalogue:cmd_schema")
    ls = sub.add_parser("list", help="the built-in scenarios, those of installed packages, and those under the "
                                     "given folders (default: ./scenarios/ where there is one)")
    ls.add_argument("paths", nargs="*", metavar="path")
    ls.set_defaults(fn="catalogue:cmd_list")
    r = sub.add_parser("run", help="run a scenario file or a built-in scenario by name")
    r.add_argument("scenario")
    r.add_argument("--size", choices=["full", "ci"], help="ci: a built-in name means its CI-size variant "
                                                         "(default: $FLOPYNET_SCENARIO_SIZE, else full)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.add_argument("--json", help="write the results structure to this file")
    RunSettings.add_cli_arguments(r)  # --seed, --backend, --executor ...: the pytest options' twins (settings.py)
    r.set_defaults(fn="run:cmd_run")
    c = sub.add_parser("compare", help="compare runs: a table, the best of each kind, an overlay plot")
    c.add_argument("results", nargs="+", help="analysis.json files or report folders")
    c.add_argument("--plot", default="compare.png", help="overlay plot to write ('' for none)")
    c.add_argument("--json", help="write the comparison to this file")
    c.set_defaults(fn="results:cmd_compare")
    rp = sub.add_parser("report", help="(re)draw the plots of report folders and print their figures; "
                                       "--allure: an HTML report of pytest's --alluredir results (Allure 3)")
    rp.add_argument("folders", nargs="*")
    rp.add_argument("--allure", metavar="RESULTS", help="the --alluredir folder to turn into HTML")
    rp.add_argument("-o", "--output", default="allure-report", help="where the HTML report goes")
    rp.add_argument("--plot-axis", choices=["time", "rounds"], default="time", help="x axis of the plots")
    rp.add_argument("--gate", action="append", default=[], help="a gate 'metric op number' to draw (repeatable; "
                                                                "the scenario's own gates are drawn too)")
    rp.set_defaults(fn="results:cmd_report")
    ca = sub.add_parser("calibrate", help="time N flows across one bottleneck link on a backend (sim, netns): "
                                          "check the simulated network against a real one")
    ca.add_argument("--backend", default="sim", help="sim (default), netns, or another package's backend")
    ca.add_argument("--bytes", type=_bounded(int, 1), default=1_000_000, help="bytes each flow sends (default 1000000)")
    ca.add_argument("--bandwidth-mbps", type=_bounded(float, 1e-3), default=10.0, help="every link's rate (default 10)")
    ca.add_argument("--rtt-ms", type=_bounded(float, 0.0), default=1.0, help="round-trip time (default 1)")
    ca.add_argument("--loss", type=_bounded(float, 0.0, 0.99), default=0.0,
                    help="share of packets the bottleneck (the server's link) drops, 0 to 0.99 (default 0)")
    ca.add_argument("--flows", type=_bounded(int, 1, 1000), default=1, help="flows sharing the bottleneck (default 1)")
    ca.add_argument("--congestion-control", choices=["cubic", "bbr", "reno"], default="cubic",
                    help="every host's TCP congestion control (default cubic)")
    ca.add_argument("--json", metavar="FILE", help="write {seconds, goodput_mbps, ...} to FILE ('-': standard output)")
    ca.set_defaults(fn="calibrate:cmd_calibrate")
    sw = sub.add_parser("sweep", help="a scenario over seeds and every combination of --set values, each its own "
                                      "run, locally or on Ray; the runs and each combination's mean, std, ci95 ...")
    sw.add_argument("scenario", help="a scenario file or a built-in scenario's name")
    sw.add_argument("--seeds", required=True, help="seeds: 1-5, 0,3,7 or 1-3,9")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=V1[,V2...]",
                    help="a dotted scenario key and its values, e.g. fl_config.aggregation_method=fedavg,fedprox "
                         "(repeatable: every combination runs)")
    sw.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="local: processes of this machine (default); ray: one Ray task per run")
    sw.add_argument("--address", help="--engine ray: an existing Ray cluster (default: an embedded local one)")
    sw.add_argument("--workers", type=_bounded(int, 1), help="runs at once on this machine (default: its cores)")
    sw.add_argument("--size", choices=["full", "ci"], help="ci: a built-in name means its CI-size variant")
    sw.add_argument("--backend", help="network backend of every run (default: the scenario's, else sim)")
    sw.add_argument("--executor", default="auto", help="how clients train (default auto)")
    sw.add_argument("--data-dir", help="folder holding local data sets")
    sw.add_argument("--json", required=True, metavar="OUT", help="write the runs and groups to OUT ('-': standard output)")
    sw.add_argument("-q", "--quiet", action="store_true", help="no progress")
    sw.set_defaults(fn="sweep:cmd_sweep")
    cl = sub.add_parser("cleanup", help="remove namespaces, links and Open vSwitch daemons that crashed "
                                        "netns runs left behind (like mn -c)")
    cl.add_argument("--check", action="store_true", help="remove nothing; list what any lab left (namespaces, links, "
                                                       "nftables tables, processes) and exit 1 if anything")
    cl.set_defaults(fn="cleanup:cmd_cleanup")
    g = sub.add_parser("gns3", help="the gns3 backend's host: build the FL node image, check what a GNS3 host needs")
    gsub = g.add_subparsers(dest="gns3_command", required=True)
    gi = gsub.add_parser("image", help="build the Docker image of the FL nodes (Debian, this interpreter's torch and "
                                       "this package) unless its content-named tag exists; needs root and debootstrap")
    gi.add_argument("--force", action="store_true", help="build it even if it exists")
    gi.add_argument("--prune", action="store_true", help="then remove the image's other (stale) tags")
    gi.set_defaults(fn="gns3:cmd_image")
    gc = gsub.add_parser("check", help="list what a GNS3 host needs to carry FL with this package, each ok or missing "
                                       "(exit 1 if anything is missing)")
    gc.add_argument("--url", help="the GNS3 server (default http://127.0.0.1:3080)")
    gc.set_defaults(fn="gns3:cmd_check")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.showwarning = one_line_warning
    try:
        return command(args.fn)(args)
    except UnavailableError as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except FlopynetError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head, which closed early: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
