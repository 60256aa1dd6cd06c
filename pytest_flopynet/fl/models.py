"""Model registry keyed by `model_architecture`; factories take the data's shape and model_parameters."""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import nn

from ..errors import FlopynetError

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory `f(input_shape, num_classes, **model_parameters) -> nn.Module`."""
    def deco(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory
    return deco


@register_model("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden_layers: list[int] = (64,)) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden_layers:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("logreg")
def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def build_model(architecture: str, parameters: dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model for a scenario; model_parameters may set num_classes and the factory's own arguments."""
    if architecture not in MODELS:
        raise FlopynetError(f"fl_config.model_architecture: unknown model {architecture!r} "
                            f"(available: {', '.join(sorted(MODELS))})")
    factory = MODELS[architecture]
    params = dict(parameters)
    declared = params.pop("num_classes", num_classes)
    if declared != num_classes:
        raise FlopynetError(f"fl_config.model_parameters.num_classes: {declared} but the data set has {num_classes} classes")
    accepted = set(inspect.signature(factory).parameters) - {"input_shape", "num_classes"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise FlopynetError(f"fl_config.model_parameters: {', '.join(unknown)} not accepted by model "
                            f"{architecture!r} (accepted: {', '.join(sorted(accepted)) or 'none'})")
    return factory(input_shape, num_classes, **params)


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one sample's forward pass, counted by torch's own FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())
