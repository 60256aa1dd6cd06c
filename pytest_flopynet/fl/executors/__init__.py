"""Client training: local SGD from the global model, returning the new flat parameters.

One module per executor, all with the same arithmetic: `sequential` trains one client after another
(the reference); `batched` trains many clients of one architecture at once with torch.func
(functional_call + vmap over stacked parameters and stacked client batches), on the GPU when there is
one, replaying each step from a CUDA graph there; `auto` picks between them. All follow the same
batch schedule (`schedule`), so they agree within float rounding.

Executors register by name in EXECUTOR_FACTORIES, which other packages extend through the entry-point
group `pytest_flopynet.executors` (name = "module:factory", factory(model, **settings) -> executor).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import FlopynetError
from ...registry import Registry


@dataclass
class LocalTask:
    client: str
    x: torch.Tensor
    y: torch.Tensor
    seed: int
    max_steps: int | None = None  # partial work (a FedProx straggler): stop after this many SGD steps
    correction: torch.Tensor | None = None  # SCAFFOLD: c - c_i, added to every local gradient


@dataclass
class Update:
    client: str
    params: torch.Tensor
    num_samples: int
    train_loss: float  # mean cross-entropy over the local steps (without the proximal or SCAFFOLD terms)
    steps: int = 0  # SGD steps taken
    control_delta: torch.Tensor | None = None  # SCAFFOLD: c_i+ - c_i as the client sent it (the nodes executor)


def schedule(n: int, epochs: int, batch_size: int, seed: int, max_steps: int | None = None) -> list[np.ndarray]:
    """The client's mini-batches: a fresh permutation per epoch cut into batches (the last one smaller),
    truncated to max_steps."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(epochs):
        order = rng.permutation(n)
        batches += [order[s:s + batch_size] for s in range(0, n, batch_size)]
    return batches if max_steps is None else batches[:max_steps]


def batchable(model: nn.Module) -> bool:
    """vmap cannot update BatchNorm's running statistics in place; every other module trains batched."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _batched_only(kind: str, model: nn.Module) -> None:
    if not batchable(model):
        raise FlopynetError(f"executor {kind!r} cannot train {type(model).__name__}: its BatchNorm layers keep "
                            f"running statistics, which vmap cannot update (use auto or sequential)")


def _batched(model: nn.Module, **settings):
    _batched_only("batched", model)
    return BatchedExecutor(model, **settings)


def _compiled(model: nn.Module, **settings):
    """Batched with torch.compile; groups padded (`group_size`), so clients that fail or leave mostly
    reuse compiled shapes."""
    _batched_only("compiled", model)
    return BatchedExecutor(model, compile=True, client_multiple=None, **settings)


def make_executor(kind: str, model: nn.Module, **settings):
    """The executor a run names (--flopynet-executor): one of settings.EXECUTORS, or another package's."""
    if kind not in EXECUTOR_FACTORIES:
        raise FlopynetError(f"executor {kind!r} is not one of {', '.join(EXECUTOR_FACTORIES)}")
    return EXECUTOR_FACTORIES.load(kind)(model, **settings)


# the executors themselves (below the shared types above, which they import)
from .auto import AutoExecutor  # noqa: E402
from .batched import BatchedExecutor, group_size, to_host  # noqa: E402
from .sequential import SequentialExecutor  # noqa: E402

EXECUTOR_FACTORIES = Registry("executor", "pytest_flopynet.executors", {
    "auto": AutoExecutor, "sequential": SequentialExecutor, "batched": _batched, "compiled": _compiled})

__all__ = ["AutoExecutor", "BatchedExecutor", "EXECUTOR_FACTORIES", "LocalTask", "SequentialExecutor", "Update",
           "batchable", "group_size", "make_executor", "schedule", "to_host"]
