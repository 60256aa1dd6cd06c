"""Client training: local SGD epochs from the global model, returning the new flat parameters."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters


@dataclass
class LocalTask:
    client: str
    x: torch.Tensor
    y: torch.Tensor
    seed: int


@dataclass
class Update:
    client: str
    params: torch.Tensor
    num_samples: int
    train_loss: float


class SequentialExecutor:
    """Trains clients one after another in this process (the reference the batched executor must match)."""

    def __init__(self, model: nn.Module, *, local_epochs: int, batch_size: int, learning_rate: float, mu: float = 0.0):
        self.model = model
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mu = mu  # FedProx proximal weight: loss + mu/2 ||w - w_global||^2

    def train(self, global_params: torch.Tensor, tasks: list[LocalTask]) -> list[Update]:
        return [self._train_one(global_params, t) for t in tasks]

    def _train_one(self, global_params: torch.Tensor, task: LocalTask) -> Update:
        model = self.model
        vector_to_parameters(global_params, model.parameters())
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=self.learning_rate)
        rng = np.random.default_rng(task.seed)
        n = len(task.y)
        losses = []
        for _ in range(self.local_epochs):
            order = torch.from_numpy(rng.permutation(n))
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(task.x[idx]), task.y[idx])
                if self.mu:
                    loss = loss + self.mu / 2 * (parameters_to_vector(model.parameters()) - global_params).pow(2).sum()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return Update(task.client, parameters_to_vector(model.parameters()).detach().clone(), n,
                      float(np.mean(losses)) if losses else 0.0)
