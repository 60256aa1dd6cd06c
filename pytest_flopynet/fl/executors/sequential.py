"""The reference executor: clients trained one after another in this process, or `workers` at a time
on threads of their own."""
from __future__ import annotations

import copy
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from . import LocalTask, Update, schedule


class SequentialExecutor:
    """Trains clients one after another in this process (the reference the batched executor must match).

    `workers` > 1 trains that many clients at once, each on a Python thread with its own copy of the
    model, while torch runs one intra-op thread: every client's arithmetic is then the single-threaded
    one, so results are byte-identical for any worker count (more intra-op threads split float sums
    differently and change the last digits). The cluster sets it from --threads."""

    workers: int = 1

    def __init__(self, model: nn.Module, *, local_epochs: int, batch_size: int, learning_rate: float, mu: float = 0.0):
        self.model = model
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mu = mu  # FedProx proximal weight: loss + mu/2 ||w - w_global||^2
        self._copies: list[nn.Module] = []  # the worker threads' own models (workers > 1), made once

    def train(self, global_params: torch.Tensor, tasks: list[LocalTask]) -> list[Update]:
        workers = min(self.workers, len(tasks))
        if workers <= 1:
            return [self._train_one(self.model, global_params, t) for t in tasks]
        models: queue.SimpleQueue = queue.SimpleQueue()  # a free model copy per running client
        for model in self._replicas(workers):
            models.put(model)

        def train_one(task: LocalTask) -> Update:
            model = models.get()
            try:
                return self._train_one(model, global_params, task)
            finally:
                models.put(model)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # each client's arithmetic single-threaded, whoever called (pytest and flopynet run do)
        try:
            # and in each new thread too: OpenMP's thread count is per thread, and a new one starts at all cores
            with ThreadPoolExecutor(workers, thread_name_prefix="flopynet-client", initializer=torch.set_num_threads,
                                    initargs=(1,)) as pool:
                return list(pool.map(train_one, tasks))  # in task order, whatever finishes first
        finally:
            torch.set_num_threads(threads)

    def _replicas(self, n: int) -> list[nn.Module]:
        if len(self._copies) < n - 1:
            self._copies = [copy.deepcopy(self.model) for _ in range(n - 1)]
        return [self.model, *self._copies[:n - 1]]

    def _train_one(self, model: nn.Module, global_params: torch.Tensor, task: LocalTask) -> Update:
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
