"""The reference executor: clients trained one after another in this process."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from . import LocalTask, Update, schedule


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
        # a copy: vector_to_parameters makes the parameters views of the vector it is given
        vector_to_parameters(global_params.clone(), model.parameters())
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=self.learning_rate)
        losses = []
        batches = schedule(len(task.y), self.local_epochs, self.batch_size, task.seed, task.max_steps)
        for idx in batches:
            idx = torch.from_numpy(idx)
            opt.zero_grad()
            data_loss = nn.functional.cross_entropy(model(task.x[idx]), task.y[idx])
            loss = data_loss
            if self.mu or task.correction is not None:
                w = parameters_to_vector(model.parameters())
                if self.mu:
                    loss = loss + self.mu / 2 * (w - global_params).pow(2).sum()
                if task.correction is not None:
                    loss = loss + (task.correction * w).sum()  # its gradient is the correction
            loss.backward()
            opt.step()
            losses.append(data_loss.item())
        return Update(task.client, parameters_to_vector(model.parameters()).detach().clone(), len(task.y),
                      float(np.mean(losses)) if losses else 0.0, len(batches))
