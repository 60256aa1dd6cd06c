"""Aggregation rules.

Stateless rules are pure functions over flat parameter vectors (as Flower's are over arrays):
`aggregate(method, updates, weights, **parameters)`. The FL server goes through the `Aggregator` seam,
`aggregate(global_params, updates, weights, state) -> new global`, so that server optimisers
(FedAvgM, FedAdam, FedYogi) and SCAFFOLD can keep state between rounds in `state`, a dict the caller
owns. Robust rules (median, trimmed_mean, krum, multikrum, bulyan) ignore the sample weights: a
Byzantine client could lie about its sample count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from ..errors import FlopynetError
from ..model.specs import AGGREGATION_RULES, AggregationSpec
from ..model.specs import register_rule as register_spec
from ..registry import Registry


def _stack(updates: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(updates)).to(torch.float64)


def fedavg(updates: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Sample-weighted mean of the client models (McMahan et al. 2017)."""
    w = torch.tensor(weights, dtype=torch.float64, device=updates[0].device)
    return ((w / w.sum()) @ _stack(updates)).to(updates[0].dtype)


def median(updates: Sequence[torch.Tensor], weights: Sequence[float] = ()) -> torch.Tensor:
    """Coordinate-wise median (Yin et al. 2018); with an even count, the mean of the two middle values."""
    s = _stack(updates).sort(0).values
    n = len(s)
    return ((s[(n - 1) // 2] + s[n // 2]) / 2).to(updates[0].dtype)


def trimmed_mean(updates: Sequence[torch.Tensor], weights: Sequence[float] = (), beta: float = 0.1) -> torch.Tensor:
    """Coordinate-wise beta-trimmed mean (Yin et al. 2018): per coordinate, drop the floor(beta * n)
    largest and smallest values and average the rest."""
    s = _stack(updates).sort(0).values
    k = int(beta * len(s))
    if len(s) - 2 * k < 1:
        raise FlopynetError(f"trimmed_mean: beta = {beta} trims every one of {len(s)} updates")
    return s[k:len(s) - k].mean(0).to(updates[0].dtype)


def krum_scores(stacked: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score per update (Blanchard et al. 2017): the sum of squared distances to its n - f - 2
    nearest other updates (at least one: Bulyan's last Krum rounds run on fewer than 2f + 3 updates)."""
    n = len(stacked)
    d = torch.cdist(stacked, stacked, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    d.fill_diagonal_(float("inf"))
    k = max(n - f - 2, 1)
    return d.sort(1).values[:, :k].sum(1)


def _check_krum(method: str, n: int, f: int) -> None:
    if n <= 2 * f + 2:
        raise FlopynetError(f"{method} needs n > 2f + 2 updates: n = {n}, f = {f}")


def krum(updates: Sequence[torch.Tensor], weights: Sequence[float] = (), f: int = 0) -> torch.Tensor:
    """The update with the smallest Krum score (first one on ties)."""
    _check_krum("krum", len(updates), f)
    return updates[int(krum_scores(_stack(updates), f).argmin())].clone()


def multikrum(updates: Sequence[torch.Tensor], weights: Sequence[float] = (), f: int = 0,
              m: int | None = None) -> torch.Tensor:
    """Mean of the m updates with the smallest Krum scores (Blanchard et al. 2017); m defaults to n - f."""
    n = len(updates)
    _check_krum("multikrum", n, f)
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise FlopynetError(f"multikrum: m = {m} must be between 1 and the {n} updates")
    stacked = _stack(updates)
    chosen = krum_scores(stacked, f).argsort(stable=True)[:m]
    return stacked[chosen].mean(0).to(updates[0].dtype)


def bulyan(updates: Sequence[torch.Tensor], weights: Sequence[float] = (), f: int = 0) -> torch.Tensor:
    """Bulyan (El Mhamdi et al. 2018): pick theta = n - 2f updates by repeated Krum (each pick leaves
    the set), then per coordinate average the beta = theta - 2f values closest to the picks' median."""
    n = len(updates)
    if n < 4 * f + 3:
        raise FlopynetError(f"bulyan needs n >= 4f + 3 updates: n = {n}, f = {f}")
    stacked = _stack(updates)
    remaining, picked = list(range(n)), []
    for _ in range(n - 2 * f):
        scores = krum_scores(stacked[remaining], f)
        picked.append(remaining.pop(int(scores.argmin())))
    selection = stacked[picked]
    med = median(list(selection))
    beta = len(picked) - 2 * f
    closest = (selection - med).abs().argsort(dim=0, stable=True)[:beta]
    return selection.gather(0, closest).mean(0).to(updates[0].dtype)


# aggregation_method -> stateless server rule
RULES: dict[str, Callable[..., torch.Tensor]] = {
    "fedavg": fedavg,
    "fedprox": fedavg,  # FedProx changes the clients' objective; the server averages as FedAvg does
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multikrum": multikrum,
    "bulyan": bulyan,
}
STATEFUL = ("fedavgm", "fedadam", "fedyogi", "scaffold")  # make_aggregator only


def aggregate(method: str, updates: Sequence[torch.Tensor], weights: Sequence[float], **parameters) -> torch.Tensor:
    """Apply a stateless rule to flat tensors: the same function the FL server uses."""
    if method in STATEFUL:
        raise FlopynetError(f"{method} keeps server state between rounds: use make_aggregator({method!r}, ...)")
    if method not in RULES:
        raise FlopynetError(f"fl_config.aggregation_method: unknown method {method!r} "
                            f"(available: {', '.join([*RULES, *STATEFUL])})")
    if not updates:
        raise ValueError("nothing to aggregate")
    parameters.pop("mu", None)
    return RULES[method](updates, weights, **parameters)


# -- the server seam --------------------------------------------------------------------------------

class Aggregator(Protocol):
    def aggregate(self, global_params: torch.Tensor, updates: Sequence[torch.Tensor], weights: Sequence[float],
                  state: dict) -> torch.Tensor: ...


class Stateless:
    """A rule of RULES as an Aggregator."""

    def __init__(self, method: str, **parameters):
        self.method, self.parameters = method, parameters

    def aggregate(self, global_params, updates, weights, state) -> torch.Tensor:
        return aggregate(self.method, updates, weights, **self.parameters)


class FedOpt:
    """Server optimisers on the pseudo-gradient (Reddi et al. 2021, Algorithm 2, and Hsu et al. 2019).

    delta = sample-weighted mean of (client - global). FedAvgM: v = momentum * v + delta,
    x += server_lr * v. FedAdam / FedYogi: m = beta1 m + (1 - beta1) delta; Adam v = beta2 v +
    (1 - beta2) delta^2, Yogi v = v - (1 - beta2) delta^2 sign(v - delta^2); x += server_lr * m /
    (sqrt(v) + tau), with v starting at tau^2 as in the paper and no bias correction."""

    METHODS = ("fedavgm", "fedadam", "fedyogi")

    def __init__(self, method: str, **parameters):
        self.method = method
        self.p = AGGREGATION_RULES[method].with_defaults(parameters)  # defaults: model.specs

    def aggregate(self, global_params, updates, weights, state) -> torch.Tensor:
        x = global_params.to(torch.float64)
        delta = fedavg(updates, weights).to(torch.float64) - x
        p = self.p
        if self.method == "fedavgm":
            v = p["momentum"] * state.get("v", torch.zeros_like(x)) + delta
            state["v"] = v
            return (x + p["server_lr"] * v).to(global_params.dtype)
        m = p["beta1"] * state.get("m", torch.zeros_like(x)) + (1 - p["beta1"]) * delta
        v = state.get("v", torch.full_like(x, p["tau"] ** 2))
        d2 = delta.pow(2)
        if self.method == "fedadam":
            v = p["beta2"] * v + (1 - p["beta2"]) * d2
        else:
            v = v - (1 - p["beta2"]) * d2 * torch.sign(v - d2)
        state["m"], state["v"] = m, v
        return (x + p["server_lr"] * m / (v.sqrt() + p["tau"])).to(global_params.dtype)


class Scaffold:
    """SCAFFOLD's server step (Karimireddy et al. 2020, Algorithm 1): x += server_lr * mean(y_i - x)
    and c += |S| / N * mean(c_i+ - c_i). The mean of the models is sample-weighted, as FedAvg's, so
    SCAFFOLD with zero control variates and server_lr 1 is FedAvg; the control-variate mean is plain.

    `state` holds "c" (the server control variate), "clients" (each client's c_i) and "num_clients" (N);
    the clients' new c_i+ come in `state["client_deltas"]` ({name: c_i+ - c_i}, set by the cluster,
    option II of the paper: c_i+ = c_i - c + (x - y_i) / (K lr))."""

    def __init__(self, method: str = "scaffold", server_lr: float = 1.0):
        self.server_lr = server_lr

    def aggregate(self, global_params, updates, weights, state) -> torch.Tensor:
        x = global_params.to(torch.float64)
        new = x + self.server_lr * (fedavg(updates, weights).to(torch.float64) - x)
        deltas = state.pop("client_deltas", {})
        if deltas:
            c = state.setdefault("c", torch.zeros_like(global_params))
            mean = torch.stack(list(deltas.values())).mean(0)
            state["c"] = c + len(deltas) / state["num_clients"] * mean
        return new.to(global_params.dtype)


@dataclass(frozen=True)
class Rule:
    """An aggregation rule as the registry holds it: its spec (model.specs) and its server side,
    `aggregator(parameters) -> Aggregator`. Another package registers one under the entry-point group
    `pytest_flopynet.rules` (name = "module:RULE"), or calls register_rule."""

    spec: AggregationSpec
    aggregator: Callable[[dict], Aggregator]


def _builtin(method: str) -> Callable[[dict], Aggregator]:
    """The server side of a built-in rule: a stateless function of RULES, a FedOpt, or SCAFFOLD's."""
    def make(parameters: dict) -> Aggregator:
        parameters = dict(parameters)
        if method in FedOpt.METHODS:
            return FedOpt(method, **parameters)
        if method == "scaffold":
            return Scaffold(method, **parameters)
        parameters.pop("mu", None)  # FedProx's mu is the clients' business
        return Stateless(method, **parameters)
    return make


AGGREGATORS = Registry("aggregation rule", "pytest_flopynet.rules",
                       {name: Rule(spec, _builtin(name)) for name, spec in AGGREGATION_RULES.items()})


def register_rule(rule: Rule) -> Rule:
    """Add an aggregation rule: its spec for validation, its aggregator for the server."""
    register_spec(rule.spec)
    return AGGREGATORS.register(rule.spec.name, rule)


def rule_problem(method: str) -> list[tuple[str, str]]:
    """[] if `method` is a registered rule (its spec then known to validation), else the problem."""
    if method not in AGGREGATORS:
        return [("fl_config.aggregation_method",
                 f"unknown aggregation method {method!r} (known: {', '.join(AGGREGATORS)})")]
    register_spec(AGGREGATORS.load(method).spec)
    return []


def make_aggregator(method: str, parameters: dict) -> Aggregator:
    """The server-side Aggregator for aggregation_method with its aggregation_parameters."""
    if method not in AGGREGATORS:
        raise FlopynetError(f"fl_config.aggregation_method: unknown method {method!r} "
                            f"(available: {', '.join(AGGREGATORS)})")
    return AGGREGATORS.load(method).aggregator(dict(parameters))
