"""Speed of client training and accuracy of the FL rules (prints figures; asserts nothing).

    python benchmarks/bench_fl.py speed [--quick] [--device cpu|cuda] [--rounds N] [--sequential-up-to N]
                                        [--compile-cpu] [--variants REGEX] [--profile [REGEX]]
                                        [--clients N [N ...]]
    python benchmarks/bench_fl.py crossover [--clients N [N ...]] [--threads N]
    python benchmarks/bench_fl.py accuracy [--rounds N]

speed: rounds per second of the sequential and the batched executor, for 50 MLP clients on the CPU
and for the seed's basic workload (cnn with hidden_layers [64, 128, 256], 3x32x32 inputs, 10 and 100
clients x 1000 samples, 5 local epochs, batch 32) on --device (cuda by default when there is one;
--quick shrinks it to something a CPU finishes). A round is local training of every client plus
aggregation, no network. On a GPU it times the batched executor eager and replayed from CUDA graphs,
in float32 and bfloat16, and with torch.compile, and prints how far each one's model after a round
is from the first variant's.
crossover: the sequential against the batched executor on the CPU, by weight of the model's layers
(forward FLOPs per linear or convolution layer call) and number of clients, with the executor
AutoExecutor picks: where its CPU rule comes from.
accuracy: the label-Dirichlet(0.1) comparison of FedAvg, FedProx and SCAFFOLD on digits, FedProx
against FedAvg on synthetic(1, 1) with 90% stragglers, and three gaussian-noise clients against each
aggregation rule: the "FL engine: measured" tables of docs/measurements.md.
"""
from __future__ import annotations

import argparse
import functools
import math
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

from pytest_flopynet import FLConfig, NetworkConfig, ScenarioConfig
from pytest_flopynet.fl.aggregation import fedavg
from pytest_flopynet.fl.attacks import Tamper
from pytest_flopynet.fl.cluster import FLCluster, train_rounds
from pytest_flopynet.fl.datasets import load_dataset
from pytest_flopynet.fl.executors import AutoExecutor, BatchedExecutor, LocalTask, SequentialExecutor
from pytest_flopynet.fl.models import build_model, forward_cost
from pytest_flopynet.fl.partition import dirichlet


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_name()}, {torch.get_num_threads()} torch threads"


# -- speed ----------------------------------------------------------------------------------------------

def workload(architecture, parameters, dataset, clients, samples, epochs, batch, device):
    data = load_dataset(dataset, 0, client_sizes=[samples] * clients, model_parameters=parameters)
    torch.manual_seed(0)
    model = build_model(architecture, parameters, data.input_shape, data.num_classes).to(device)
    g = parameters_to_vector(model.parameters()).detach().clone()
    rng = np.random.default_rng(0)
    tasks = []
    for i in range(clients):
        idx = torch.from_numpy(rng.choice(len(data.y_train), samples, replace=False))
        tasks.append(LocalTask(f"client_{i + 1}", data.x_train[idx].to(device), data.y_train[idx].to(device), i))
    settings = dict(local_epochs=epochs, batch_size=batch, learning_rate=0.01)
    return model, g, tasks, settings


def timed_rounds(executor, g, tasks, rounds: int, device) -> tuple[float, float, torch.Tensor]:
    """(seconds of the first round, which captures or compiles; seconds per later round; the model
    after the first round)."""
    def one_round(g):
        updates = executor.train(g, tasks)
        return fedavg([u.params.to(g.device) for u in updates], [u.num_samples for u in updates])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    start = time.perf_counter()
    first = one_round(g)
    sync()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    g = first
    for _ in range(rounds):
        g = one_round(g)
    sync()
    return warm, (time.perf_counter() - start) / rounds, first.cpu()


def variants(dev: torch.device, compile_cpu: bool, convolutional: bool):
    """(label, executor settings) of each way to run a round on dev; None is the sequential executor."""
    if dev.type == "cpu":
        out = [("sequential", None), ("batched", {})]
        out += [("batched, convolutions as matmul", {"convolutions": "matmul"})] if convolutional else []
        return out + [("batched, torch.compile", {"compile": True})] if compile_cpu else out
    # most telling first: the GPU check has minutes, and the compiled variants (run after every other
    # variant of every workload, see speed) spend most of theirs compiling
    out = [("sequential", None),
           ("batched, bfloat16, CUDA graph (default)", {}),
           ("batched, bfloat16, eager", {"mixed_precision": True, "cuda_graphs": False}),
           ("batched, float32, CUDA graph", {"mixed_precision": False}),
           ("batched, float32, eager", {"mixed_precision": False, "cuda_graphs": False})]
    if convolutional:
        out[2:2] = [("batched, bfloat16, CUDA graph, client-kernel convolutions", {"convolutions": "client_kernel"}),
                    ("batched, bfloat16, CUDA graph, convolutions as matmul", {"convolutions": "matmul"})]
    if convolutional:
        out.append(("batched, bfloat16, torch.compile + CUDA graph, client-kernel convolutions",
                    {"convolutions": "client_kernel", "compile": True}))
        out.append(("--flopynet-executor compiled: the same, groups padded by group_size",
                    {"compile": True, "client_multiple": None}))
    out.append(("batched, bfloat16, torch.compile + CUDA graph", {"compile": True, "convolutions": "grouped"}))
    if convolutional:
        out.append(("batched, bfloat16, torch.compile + CUDA graph, convolutions as matmul",
                    {"convolutions": "matmul", "compile": True}))
    return out


def profile(executor, g, tasks) -> None:
    """Where a batched step's time goes: the CUDA kernels of 10 steps of every client, run by the
    timed executor (compiled as it was) without its CUDA graphs, so the profiler names each kernel;
    then the client-kernel operators' device time per layer shape (their kernels share one name)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler
    for step in executor._steps.values():
        step.graph = None
    short = [LocalTask(t.client, t.x, t.y, t.seed, max_steps=10) for t in tasks]
    executor.train(g, short)
    torch.cuda.synchronize()
    with profiler(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        executor.train(g, short)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=70))
    for op in prof.key_averages(group_by_input_shape=True):
        if op.key.startswith("flopynet::"):
            print(f"  {op.key:<38} inputs {op.input_shapes}: {op.count} calls, "
                  f"{op.device_time_total / 1e3:.1f} ms on the device")


def speed(args) -> None:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cpu = torch.device("cpu")
    cases = [("50 mlp clients [64] x 100 digits, 2 epochs, batch 32", cpu,
              ("mlp", {"hidden_layers": [64]}, "digits", 50, 100, 2, 32))]
    if args.quick:
        cases.append(("4 cnn clients [16, 32, 64] x 128 images 3x32x32, 1 epoch, batch 32 (--quick)", device,
                      ("cnn", {"hidden_layers": [16, 32, 64], "input_channels": 3}, "synthetic_images", 4, 128, 1, 32)))
    else:
        for clients in args.clients:
            cases.append((f"{clients} cnn clients [64, 128, 256] x 1000 images 3x32x32, 5 epochs, batch 32", device,
                          ("cnn", {"hidden_layers": [64, 128, 256], "input_channels": 3}, "synthetic_images",
                           clients, 1000, 5, 32)))
    print(f"torch {torch.__version__}")
    built = [workload(*spec, dev) for _, dev, spec in cases]
    jobs = []  # (case, label, options): every uncompiled variant of every workload before any compiled one
    for compiled in (False, True):
        for i, (_, dev, _) in enumerate(cases):
            convolutional = any(isinstance(m, torch.nn.Conv2d) for m in built[i][0].modules())
            jobs += [(i, label, options) for label, options in variants(dev, args.compile_cpu, convolutional)
                     if bool(options and options.get("compile")) == compiled
                     and re.search(args.variants, label)]
    table, reference = [], {}
    for i, label, options in jobs:
        title, dev, _ = cases[i]
        model, g, tasks, settings = built[i]
        if i not in reference:
            print(f"{title} on {device_name(dev)}:", flush=True)
            reference[i] = None
        if options is None and len(tasks) > args.sequential_up_to:
            print(f"  {label:<70} skipped (more than --sequential-up-to {args.sequential_up_to} clients)")
            continue
        executor = (SequentialExecutor(model, **settings) if options is None
                    else BatchedExecutor(model, device=dev, **options, **settings))
        name = f"{title.split(' x ')[0]}: {label}"
        try:
            if options and options.get("compile"):
                torch._dynamo.reset()  # compile afresh: an earlier variant's compiled code must not be reused
            warm, per_round, first = timed_rounds(executor, g.to(dev), tasks, args.rounds, dev)
        except Exception as exc:  # one variant failing (a compiler, a capture) must not hide the others
            print(f"  {name:<80} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", flush=True)
            table.append((title.split(" x ")[0], label, math.nan, math.nan))
            continue
        reference[i] = first if reference[i] is None else reference[i]
        drift = ((first - reference[i]).norm() / (reference[i] - g.cpu()).norm()).item()
        print(f"  {name:<80} {per_round:8.3f} s per round ({1 / per_round:7.2f} rounds/s); first round "
              f"{warm:6.2f} s; model after round 1 differs from the first variant's by {drift:.1e} (relative)",
              flush=True)
        table.append((title.split(" x ")[0], label, per_round, warm))
        if args.profile is not None and options is not None and dev.type == "cuda" and re.search(args.profile, label):
            print(f"CUDA kernels of 10 steps, {name}:", flush=True)
            try:
                profile(executor, g.to(dev), tasks)
            except Exception as exc:
                print(f"  profile FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        del executor
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print("\n| workload | executor | s per round | first round (capture, compile) |\n|---|---|---|---|")
    for workload_name, label, per_round, warm in table:
        print(f"| {workload_name} | {label} | {per_round:.3f} | {warm:.2f} |")


# -- accuracy -------------------------------------------------------------------------------------------

# (architecture, model_parameters, input shape), lightest layers first
CROSSOVER = [("mlp", {"hidden_layers": [64]}, (64,)), ("cnn", {"hidden_layers": [8, 16]}, (1, 8, 8)),
             ("lstm", {"hidden_size": 32}, (10, 8)), ("lstm", {"hidden_size": 64}, (20, 30)),
             ("mlp", {"hidden_layers": [64]}, (3072,)), ("cnn", {"hidden_layers": [32, 64]}, (1, 8, 8)),
             ("lstm", {"hidden_size": 128, "num_layers": 2}, (20, 100)),
             ("cnn", {"hidden_layers": [16, 32]}, (3, 32, 32))]


def crossover(args) -> None:
    print(f"# {device_name(torch.device('cpu'))}, torch {torch.__version__}; random data, 100 samples per "
          "client, batch 32, 2 local epochs; ms per round, the mean of 3 after a first one")
    print("| model | input | kFLOP per layer call | clients | sequential | batched | sequential / batched | auto |")
    print("|---|---|---|---|---|---|---|---|")
    for architecture, parameters, shape in CROSSOVER:
        torch.manual_seed(0)
        model = build_model(architecture, parameters, shape, 10)
        flops, calls = forward_cost(model, shape)
        g = parameters_to_vector(model.parameters()).detach().clone()
        settings = dict(local_epochs=2, batch_size=32, learning_rate=0.1)
        for n in args.clients:
            tasks = [LocalTask(f"c{i}", torch.randn(100, *shape), torch.randint(0, 10, (100,)), i) for i in range(n)]
            ms = []
            for executor in (SequentialExecutor(model, **settings), BatchedExecutor(model, device="cpu", **settings)):
                executor.train(g, tasks)
                start = time.perf_counter()
                for _ in range(3):
                    executor.train(g, tasks)
                ms.append((time.perf_counter() - start) / 3 * 1e3)
            auto = "batched" if AutoExecutor(model, device="cpu", **settings).batches(tasks) else "sequential"
            print(f"| {architecture} {parameters} | {'x'.join(map(str, shape))} | {flops / calls / 1e3:.1f} | {n} "
                  f"| {ms[0]:.1f} | {ms[1]:.1f} | {ms[0] / ms[1]:.2f} | {auto} |", flush=True)


def config(n: int, **fl) -> ScenarioConfig:
    base = dict(model_architecture="mlp", model_parameters={"hidden_layers": [64]}, total_rounds=1,
                clients_per_round=n, local_epochs=2, batch_size=32, learning_rate=0.1, dataset="digits")
    base.update(fl)
    return ScenarioConfig(name="bench", fl_config=FLConfig(**base), network_config=NetworkConfig(node_count=n + 1))


def rounds_to(accuracies: list[float], target: float) -> str:
    return next((str(i + 1) for i, a in enumerate(accuracies) if a >= target), "never")


def accuracy(args) -> None:
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, seeds {args.seeds}")
    rounds = args.rounds
    if "dirichlet" in args.parts:
        dirichlet_table(args, rounds)
    if "stragglers" in args.parts:
        straggler_table(args)
    if "noise" in args.parts:
        noise_table(args)


def dirichlet_table(args, rounds: int) -> None:
    print(f"\nDigits, MLP [64], 10 clients x 143 samples, label-Dirichlet(0.1), all clients every round, "
          f"2 local epochs, batch 32, lr 0.1, {rounds} rounds (mean over seeds)")
    print("| rule | rounds to 0.85 (per seed) | final accuracy (per seed) |\n|---|---|---|")
    for label, method, parameters in [("FedAvg", "fedavg", {}), ("FedProx (mu = 0.1)", "fedprox", {"mu": 0.1}),
                                      ("FedProx (mu = 1)", "fedprox", {"mu": 1.0}), ("SCAFFOLD", "scaffold", {})]:
        reached, finals = [], []
        for seed in args.seeds:
            cl = FLCluster(config(10, client_data_sizes=[143] * 10, aggregation_method=method,
                                  aggregation_parameters=parameters), seed,
                           partitioner=functools.partial(dirichlet, alpha=0.1))
            acc = train_rounds(cl, rounds)
            reached.append(rounds_to(acc, 0.85))
            finals.append(acc[-1])
        print(f"| {label} | {', '.join(reached)} | {np.mean(finals):.3f} ({', '.join(f'{a:.3f}' for a in finals)}) |")



def straggler_table(args) -> None:
    """The FedProx paper's straggler setting over several seeds: accuracy at rounds 10, 25, 50 and the
    last, each the mean over the seeds with its 95% confidence interval (Student's t) and the per-seed
    values, and the rounds each seed took to reach 0.7."""
    from pytest_flopynet.analysis.spread import describe

    srounds = args.straggler_rounds
    marks = sorted({r for r in (10, 25, 50, srounds) if r <= srounds})
    print(f"\nSynthetic(1, 1), logistic regression, 30 clients (power-law sizes), 10 per round, 20 local epochs, "
          f"batch 10, lr 0.01, 90% stragglers, {srounds} rounds, seeds {args.seeds}")
    print(f"| rule | {' | '.join(f'round {r}: mean [95% CI] (per seed)' for r in marks)} | rounds to 0.7 |\n"
          f"|---|{'---|' * len(marks)}---|")
    for label, method, parameters in [("FedAvg (drops stragglers)", "fedavg", {}),
                                      ("FedProx mu = 0 (keeps partial work)", "fedprox", {"mu": 0.0}),
                                      ("FedProx mu = 1 (keeps partial work)", "fedprox", {"mu": 1.0})]:
        curves = []
        for seed in args.seeds:
            cl = FLCluster(config(30, model_architecture="logreg", model_parameters={},
                                  dataset="synthetic_alpha_beta(1, 1)", clients_per_round=10, local_epochs=20,
                                  batch_size=10, learning_rate=0.01, aggregation_method=method,
                                  aggregation_parameters=parameters), seed)
            curves.append(train_rounds(cl, srounds, stragglers=0.9))
        cells = []
        for r in marks:
            d = describe(c[r - 1] for c in curves)
            ci = f"[{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]" if d["ci95"] else ""
            cells.append(f"{d['mean']:.3f} {ci} ({', '.join(f'{c[r - 1]:.2f}' for c in curves)})")
        print(f"| {label} | {' | '.join(cells)} | {', '.join(rounds_to(c, 0.7) for c in curves)} |", flush=True)


def noise_table(args) -> None:
    print("\nDigits, 10 clients x 140 samples (bulyan: 15), 3 of them add N(0, 10^2) to their update, "
          "2 local epochs, lr 0.1, 20 rounds: final accuracy (per seed)")
    print("| rule | logistic regression | MLP [64] |\n|---|---|---|")
    for method, parameters, n in [("fedavg", {}, 10), ("krum", {"f": 3}, 10), ("multikrum", {"f": 3}, 10),
                                  ("median", {}, 10), ("trimmed_mean", {"beta": 0.3}, 10), ("bulyan", {"f": 3}, 15)]:
        cells = []
        for arch, mp in [("logreg", {}), ("mlp", {"hidden_layers": [64]})]:
            finals = []
            for seed in args.seeds:
                cl = FLCluster(config(n, model_architecture=arch, model_parameters=mp, client_data_sizes=[140] * n,
                                      aggregation_method=method, aggregation_parameters=parameters), seed)
                for name in ["client_1", "client_2", "client_3"]:
                    cl.add_tamper(name, Tamper("gaussian_noise", {"noise_std": 10}))
                finals.append(train_rounds(cl, 20)[-1])
            cells.append(", ".join(f"{a:.3f}" for a in finals))
        print(f"| {method} {parameters or ''} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--quick", action="store_true", help="a CNN workload small enough for a CPU")
    s.add_argument("--device", choices=["cpu", "cuda"], help="device of the CNN workload (default: cuda if any)")
    s.add_argument("--rounds", type=int, default=3, help="timed rounds after the first")
    s.add_argument("--sequential-up-to", type=int, default=1000, help="skip the sequential executor above this "
                   "many clients (100 clients of the GPU workload take about 45 s per round that way)")
    s.add_argument("--variants", default="", metavar="REGEX", help="only the executor variants whose label "
                   "matches (e.g. 'bfloat16, (CUDA graph|torch.compile)')")
    s.add_argument("--profile", nargs="?", const="", metavar="REGEX", help="on a GPU, also print the CUDA kernels "
                   "of a batched step, for the variants whose label matches (all without REGEX)")
    s.add_argument("--clients", type=int, nargs="+", default=[10, 100], help="client counts of the GPU workload")
    s.add_argument("--compile-cpu", action="store_true", help="also time torch.compile on the CPU "
                   "(Inductor's C++ backend; its first round compiles, for tens of seconds)")
    s.add_argument("--threads", type=int, help="torch intra-op threads")
    c = sub.add_parser("crossover")
    c.add_argument("--clients", type=int, nargs="+", default=[2, 3, 5, 10])
    c.add_argument("--threads", type=int, default=1, help="torch intra-op threads (pytest trains on 1)")
    a = sub.add_parser("accuracy")
    a.add_argument("--rounds", type=int, default=50)
    a.add_argument("--straggler-rounds", type=int, default=50)
    a.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    a.add_argument("--parts", nargs="+", choices=["dirichlet", "stragglers", "noise"],
                   default=["dirichlet", "stragglers", "noise"])
    a.add_argument("--threads", type=int, default=1, help="torch intra-op threads (small models: 1 is fastest)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"speed": speed, "crossover": crossover, "accuracy": accuracy}[args.what](args)


if __name__ == "__main__":
    main()
