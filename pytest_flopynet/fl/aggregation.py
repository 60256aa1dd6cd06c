"""Aggregation rules as pure functions over flat parameter vectors (as Flower's are over arrays)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import FlopynetError


def fedavg(updates: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Sample-weighted mean of the client models (McMahan et al. 2017)."""
    w = torch.tensor(weights, dtype=torch.float64)
    stacked = torch.stack(list(updates)).to(torch.float64)
    return ((w / w.sum()) @ stacked).to(updates[0].dtype)


# aggregation_method -> server rule
RULES: dict[str, Callable[..., torch.Tensor]] = {
    "fedavg": fedavg,
    "fedprox": fedavg,  # FedProx changes the clients' objective; the server averages as FedAvg does
}


def aggregate(method: str, updates: Sequence[torch.Tensor], weights: Sequence[float], **parameters) -> torch.Tensor:
    """Apply a stateless rule to flat tensors: the same function the FL server uses."""
    if method not in RULES:
        raise FlopynetError(f"fl_config.aggregation_method: {method!r} is not available in this version "
                            f"(available: {', '.join(RULES)})")
    if not updates:
        raise ValueError("nothing to aggregate")
    parameters.pop("mu", None)
    return RULES[method](updates, weights, **parameters)
