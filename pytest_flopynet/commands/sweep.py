"""flopynet sweep: a scenario over seeds and every combination of --set values, each run its own process
(--engine local) or its own Ray task (--engine ray), streamed back as they finish; the runs and, per
combination, every summary metric's n, mean, std, min, max and ci95."""
from __future__ import annotations

import copy
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ..analysis.spread import across_seeds
from ..discovery import find_scenario
from ..errors import FlopynetError
from ..model.io import from_dict, to_dict
from ..parallel import Processes, Ray
from ..session import Scenario
from ..settings import RunSettings
from . import EXIT_FAILED, EXIT_OK

def parse_seeds(text: str) -> list[int]:
    """'1-5', '0,3,7' or '1-3,9': the seeds in the order given, each once."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, dash, high = part.partition("-")
        try:
            span = range(int(low), int(high) + 1) if dash else [int(low)]
        except ValueError:
            raise FlopynetError(f"--seeds: {part!r} is not a seed or a range like 1-5") from None
        if dash and int(high) < int(low):
            raise FlopynetError(f"--seeds: {part!r} runs backwards")
        seeds += [s for s in span if s not in seeds]
    if not seeds:
        raise FlopynetError("--seeds: no seed given (e.g. --seeds 1-5)")
    return seeds


def parse_set(text: str) -> tuple[str, list[Any]]:
    """'fl_config.aggregation_method=fedavg,fedprox' -> the dotted key and its values, each read as YAML
    (0.1 is a number, fedavg a string)."""
    key, eq, values = text.partition("=")
    if not eq or not key.strip() or not values.strip():
        raise FlopynetError(f"--set {text!r}: expected KEY=VALUE[,VALUE...], e.g. fl_config.aggregation_method=fedavg,fedprox")
    return key.strip(), [yaml.safe_load(v.strip()) for v in values.split(",")]


def combinations(sets: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the --set values ({} when there is none)."""
    keys = [k for k, _ in sets]
    return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in sets))]


def with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a scenario's dict with each dotted key set (missing levels made)."""
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        node, *path = key.split(".")
        here = data
        for part in [node, *path][:-1]:
            here = here.setdefault(part, {})
            if not isinstance(here, dict):
                raise FlopynetError(f"--set {key}: {part} is not a mapping")
        here[[node, *path][-1]] = value
    return data


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """One run of a sweep, in a worker: the scenario with its overrides at its seed; what comes back is
    small (its summary), whatever the engine."""
    import torch

    torch.set_num_threads(1)  # one run per core: runs, not threads, fill the machine
    head = {"seed": task["seed"], "overrides": task["overrides"]}
    try:
        found = find_scenario(task["scenario"], [Path(task["cwd"])], task["size"])
        base_dir = found.source.parent if found.source else None
        found.config = from_dict(with_overrides(to_dict(found.config), task["overrides"]),
                                 str(found.source or found.config.name), base_dir)
        settings = RunSettings(reports=None, seed=task["seed"], seed_overrides_file=True, backend=task["backend"],
                               executor=task["executor"], data_dir=Path(task["data_dir"]) if task["data_dir"] else None)
        result = found.execute_on(Scenario(found.config, settings=settings, source=found.source))
    except FlopynetError as exc:
        return {**head, "error": str(exc)}
    return {**head, "state": str(result.state), "execution_summary": result.analysis["execution_summary"]}


def group_statistics(runs: list[dict], groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per combination: its runs' n and, for every numeric summary metric, describe() over them."""
    out = []
    for overrides in groups:
        done = [r for r in runs if r["overrides"] == overrides and "execution_summary" in r]
        out.append({"overrides": overrides, "n": len(done), "metrics": across_seeds(done) if done else {}})
    return out


def sweep(scenario: str, seeds: list[int], sets: list[tuple[str, list[Any]]], *, engine: str = "local",
          address: str | None = None, workers: int | None = None, size: str | None = None, backend: str | None = None,
          executor: str = "auto", data_dir: str | None = None, on_run=None) -> dict[str, Any]:
    """Every combination of `sets` at every seed; `on_run(run, done, total)` as each finishes. The result:
    {"scenario", "engine", "seeds", "runs": [...], "groups": [...]} (runs in combination, then seed order)."""
    found = find_scenario(scenario, [Path.cwd()], size)  # a bad name or file fails here, once
    groups = combinations(sets)
    for overrides in groups:  # and so does a bad --set value, naming its field
        from_dict(with_overrides(to_dict(found.config), overrides), f"{found.source or found.config.name} with "
                  f"{', '.join(f'{k}={v}' for k, v in overrides.items()) or 'no overrides'}",
                  found.source.parent if found.source else None)
    tasks = [{"scenario": str(scenario), "cwd": str(Path.cwd()), "size": size, "seed": seed, "overrides": overrides,
              "backend": backend, "executor": executor, "data_dir": data_dir} for overrides in groups for seed in seeds]
    workers = workers or os.cpu_count() or 1
    runs = []
    with (Ray(address, workers, needs="flopynet sweep --engine ray") if engine == "ray"
          else Processes(min(workers, len(tasks)))) as runner:
        for run in runner.run(run_one, tasks):
            runs.append(run)
            if on_run is not None:
                on_run(run, len(runs), len(tasks))
    order = {(json.dumps(t["overrides"], sort_keys=True), t["seed"]): i for i, t in enumerate(tasks)}
    runs.sort(key=lambda r: order[(json.dumps(r["overrides"], sort_keys=True), r["seed"])])
    return {"scenario": found.config.name, "engine": engine, "seeds": seeds, "runs": runs,
            "groups": group_statistics(runs, groups)}


def cmd_sweep(args) -> int:
    seeds, sets = parse_seeds(args.seeds), [parse_set(s) for s in args.set]
    total = len(seeds) * len(combinations(sets))
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        bar = Progress(TextColumn("runs"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[last]}"))
        task = bar.add_task("runs", total=total, last="")
        bar.start()

    def on_run(run, done, total):
        what = f"seed {run['seed']} {run['overrides'] or ''}".strip()
        line = (f"{what}: {run['error']}" if "error" in run else
                f"{what}: final accuracy {run['execution_summary']['final_accuracy']:.4f}")
        if bar is not None:
            bar.update(task, completed=done, last=line)
        elif not args.quiet:
            print(f"[{done}/{total}] {line}", file=sys.stderr, flush=True)
    try:
        out = sweep(args.scenario, seeds, sets, engine=args.engine, address=args.address, workers=args.workers,
                    size=args.size, backend=args.backend, executor=args.executor, data_dir=args.data_dir, on_run=on_run)
    finally:
        if bar is not None:
            bar.stop()
    text = json.dumps(out, indent=2, default=str) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text, encoding="utf-8")
        for group in out["groups"]:
            acc = group["metrics"].get("final_accuracy")
            label = ", ".join(f"{k}={v}" for k, v in group["overrides"].items()) or out["scenario"]
            if acc and acc["n"]:
                ci = f", 95% CI [{acc['ci95'][0]:.4f}, {acc['ci95'][1]:.4f}]" if acc["ci95"] else ""
                print(f"{label}: final accuracy {acc['mean']:.4f} +- {acc['std']:.4f} over {acc['n']} seeds "
                      f"(min {acc['min']:.4f}, max {acc['max']:.4f}{ci})")
            else:
                print(f"{label}: no run finished")
        print(f"runs: {args.json}")
    failed = [r for r in out["runs"] if "error" in r]
    for r in failed:
        print(f"seed {r['seed']} {r['overrides'] or ''}: {r['error']}".strip(), file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
