"""`auto`: the batched executor where batching pays, else the sequential one."""
from __future__ import annotations

import torch
from torch import nn

from ..models import forward_cost
from . import LocalTask, Update, batchable
from .batched import BatchedExecutor
from .sequential import SequentialExecutor

# On a CPU, batching clients pays where a step is many small operators (their per-call overhead is
# shared) and loses where each layer is heavy arithmetic: the CPU is busy either way, and the batched
# step adds its padding (masked samples) and vmap's slower grouped convolutions and batched matrix
# products. The thresholds sit between the measured crossovers (docs/executors.md, from
# `bench_fl.py crossover`).
CPU_BATCHING_MIN_CLIENTS = 3
CPU_BATCHING_MAX_LAYER_FLOPS = 100e3


class AutoExecutor:
    """The batched executor where batching pays, else the sequential one: on a GPU for two clients or
    more; on a CPU for CPU_BATCHING_MIN_CLIENTS or more, when the model's layers are light (mean
    forward FLOPs per layer call and sample under CPU_BATCHING_MAX_LAYER_FLOPS). Only the model, the
    input shape, the number of clients and the device decide, so the same seed keeps the same metrics."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None, **settings):
        self.model = model
        self.sequential = SequentialExecutor(model, **settings)
        self.batched = BatchedExecutor(model, device=device, **settings) if batchable(model) else None
        self._light_layers: bool | None = None  # decided on the first batch of tasks (it needs their shape)

    def batches(self, tasks: list[LocalTask]) -> bool:
        """Whether these tasks train batched."""
        if self.batched is None:
            return False
        if self.batched.device.type != "cpu":
            return len(tasks) >= 2
        if len(tasks) < CPU_BATCHING_MIN_CLIENTS:
            return False
        if self._light_layers is None:
            flops, calls = forward_cost(self.model, tuple(tasks[0].x.shape[1:]))
            self._light_layers = calls == 0 or flops / calls < CPU_BATCHING_MAX_LAYER_FLOPS
        return self._light_layers

    @property
    def workers(self) -> int:
        """Clients trained at once where training is sequential (SequentialExecutor.workers)."""
        return self.sequential.workers

    @workers.setter
    def workers(self, n: int) -> None:
        self.sequential.workers = n

    def train(self, global_params: torch.Tensor, tasks: list[LocalTask]) -> list[Update]:
        executor = self.batched if self.batches(tasks) else self.sequential
        return executor.train(global_params, tasks)
