"""What Byzantine clients and drifting data do to a client's training, as pure functions.

Data attacks change a client's (x, y) before it trains; update attacks change the parameters it
sends back. All take an explicit generator, so the same seed gives the same attack.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..model import EventType, event_spec


def flip_labels(y: torch.Tensor, fraction: float, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Label flipping: a `fraction` of the labels (chosen at random) become (label + 1 + r) mod K with
    r uniform in 0..K-2, so a flipped label is always wrong."""
    y = y.clone()
    n = round(fraction * len(y))
    idx = torch.randperm(len(y), generator=gen)[:n]
    shift = 1 + torch.randint(0, num_classes - 1, (n,), generator=gen)
    y[idx] = (y[idx] + shift) % num_classes
    return y


def shift_labels(y: torch.Tensor, severity: float, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Label-distribution drift: a `severity` share of the samples are relabelled as the next class
    (concept drift: the same inputs now mean something else)."""
    y = y.clone()
    idx = torch.randperm(len(y), generator=gen)[:round(severity * len(y))]
    y[idx] = (y[idx] + 1) % num_classes
    return y


def shift_features(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    """Feature (covariate) drift: inputs move by `severity` standard deviations along a random direction."""
    direction = torch.randn(x.shape[1:], generator=gen)
    direction = direction / direction.norm()
    scale = severity * x.std() * direction.numel() ** 0.5
    return x + scale * direction


def gaussian_noise(params: torch.Tensor, global_params: torch.Tensor, noise_std: float,
                   gen: torch.Generator) -> torch.Tensor:
    """Adds N(0, noise_std^2) to every coordinate of the update."""
    return params + noise_std * torch.randn(params.shape, generator=gen, dtype=params.dtype)


def sign_flipping(params: torch.Tensor, global_params: torch.Tensor) -> torch.Tensor:
    """Sends the negated update: global - (params - global)."""
    return 2 * global_params - params


def scaling(params: torch.Tensor, global_params: torch.Tensor, scale: float) -> torch.Tensor:
    """Model replacement (Bagdasaryan et al.): the update boosted by `scale`."""
    return global_params + scale * (params - global_params)


@dataclass
class Tamper:
    """One active attack or drift on one client (added by an event, removed by its end)."""

    kind: str  # label_flipping, gaussian_noise, sign_flipping, scaling, label_shift, feature_shift
    params: dict[str, Any] = field(default_factory=dict)

    DATA = ("label_flipping", "label_shift", "feature_shift")
    DRIFTS = ("label_shift", "feature_shift")

    def __post_init__(self) -> None:  # the event type's defaults (model.specs) under what was given
        kind = EventType.DATA_DRIFT if self.kind in self.DRIFTS else EventType.MODEL_POISONING
        self.params = event_spec(kind).with_defaults(self.params)

    @property
    def on_data(self) -> bool:
        return self.kind in self.DATA

    def data(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator):
        if self.kind == "label_flipping":
            return x, flip_labels(y, float(self.params["attack_intensity"]), num_classes, gen)
        if self.kind == "label_shift":
            return x, shift_labels(y, float(self.params["severity"]), num_classes, gen)
        return shift_features(x, float(self.params["severity"]), gen), y

    def update(self, params: torch.Tensor, global_params: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.kind == "gaussian_noise":
            return gaussian_noise(params, global_params, float(self.params["noise_std"]), gen)
        if self.kind == "sign_flipping":
            return sign_flipping(params, global_params)
        return scaling(params, global_params, float(self.params["scale"]))
