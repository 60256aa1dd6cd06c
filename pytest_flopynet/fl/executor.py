"""Client training: local SGD from the global model, returning the new flat parameters.

Two executors with the same arithmetic: `SequentialExecutor` trains one client after another (the
reference); `BatchedExecutor` trains many clients of one architecture at once with torch.func
(functional_call + vmap over stacked parameters and stacked client batches), on the GPU when there is
one. Both follow the same batch schedule (`schedule`), so they agree within float rounding.
"""
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
    max_steps: int | None = None  # partial work (a FedProx straggler): stop after this many SGD steps
    correction: torch.Tensor | None = None  # SCAFFOLD: c - c_i, added to every local gradient


@dataclass
class Update:
    client: str
    params: torch.Tensor
    num_samples: int
    train_loss: float  # mean cross-entropy over the local steps (without the proximal or SCAFFOLD terms)
    steps: int = 0  # SGD steps taken


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


class BatchedExecutor:
    """Trains a group of clients together: one vmapped SGD step advances every client by one of its
    own mini-batches. Clients with fewer steps or a smaller last batch are masked (a masked sample adds
    nothing to the loss, a finished client's step is zero), and clients are bucketed by step count so
    no bucket wastes more than half of its work on masked steps."""

    def __init__(self, model: nn.Module, *, local_epochs: int, batch_size: int, learning_rate: float, mu: float = 0.0,
                 device: str | torch.device | None = None, mixed_precision: bool | None = None):
        self.model = model
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mu = mu
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # on a GPU, forward and backward run in bfloat16 (weights and updates stay float32); on the
        # CPU everything is float32, so the batched executor matches the sequential one there
        self.mixed_precision = self.device.type == "cuda" if mixed_precision is None else mixed_precision
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._loss = None

    def train(self, global_params: torch.Tensor, tasks: list[LocalTask]) -> list[Update]:
        plans = [schedule(len(t.y), self.local_epochs, self.batch_size, t.seed, t.max_steps) for t in tasks]
        order = sorted(range(len(tasks)), key=lambda i: -len(plans[i]))
        results: dict[int, Update] = {}
        while order:
            longest = len(plans[order[0]])
            bucket = [i for i in order if 2 * len(plans[i]) > longest or len(plans[i]) == longest]
            order = [i for i in order if i not in bucket]
            for i, update in zip(bucket, self._train_group(global_params, [tasks[i] for i in bucket],
                                                           [plans[i] for i in bucket])):
                results[i] = update
        return [results[i] for i in range(len(tasks))]

    def _loss_fn(self):
        """Each client's masked mean cross-entropy on its own batch, vmapped over clients. The gradients
        come from one backward pass over the sum: clients share no parameters, so each one's gradient is
        its own (cheaper on a CPU than vmap(grad(...)))."""
        if self._loss is None:
            from torch.func import functional_call, vmap
            model = self.model
            buffers = {k: v.to(self.device) for k, v in model.named_buffers()}

            def loss_fn(params, xb, yb, mb):
                ce = nn.functional.cross_entropy(functional_call(model, (params, buffers), (xb,)), yb, reduction="none")
                return (ce * mb).sum() / mb.sum().clamp(min=1)

            self._loss = vmap(loss_fn)
        return self._loss

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, pos = {}, 0
        for name, p in self.model.named_parameters():
            out[name] = flat[..., pos:pos + p.numel()].reshape(*flat.shape[:-1], *p.shape)
            pos += p.numel()
        return out

    def _train_group(self, global_params: torch.Tensor, tasks: list[LocalTask], plans: list[list[np.ndarray]]):
        dev, C, B = self.device, len(tasks), self.batch_size
        T = max(len(p) for p in plans)
        n_max = max(len(t.y) for t in tasks)
        idx = torch.zeros(C, T, B, dtype=torch.long)
        mask = torch.zeros(C, T, B)
        for c, plan in enumerate(plans):
            for s, batch in enumerate(plan):
                idx[c, s, :len(batch)] = torch.from_numpy(batch)
                mask[c, s, :len(batch)] = 1
        active = (mask.sum(2) > 0).float()
        x = torch.zeros(C, n_max, *tasks[0].x.shape[1:], device=dev)
        y = torch.zeros(C, n_max, dtype=torch.long, device=dev)
        for c, t in enumerate(tasks):
            x[c, :len(t.y)], y[c, :len(t.y)] = t.x, t.y
        idx, mask, active = (v.to(dev) for v in (idx, mask, active))
        g = global_params.to(dev)
        global_dict = self._unflatten(g)
        params = {k: v.unsqueeze(0).repeat(C, *[1] * v.dim()) for k, v in global_dict.items()}
        correction = None
        if any(t.correction is not None for t in tasks):
            correction = self._unflatten(torch.stack([t.correction if t.correction is not None else torch.zeros_like(g)
                                                      for t in tasks]).to(dev))
        loss_fn = self._loss_fn()
        rows = torch.arange(C, device=dev)[:, None]
        losses = torch.zeros(C, device=dev)
        lr, mu = self.learning_rate, self.mu
        for s in range(T):
            batch = idx[:, s]
            params = {k: p.detach().requires_grad_() for k, p in params.items()}
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.mixed_precision):
                data_loss = loss_fn(params, x[rows, batch], y[rows, batch], mask[:, s]).float()
            grads = torch.autograd.grad(data_loss.sum(), list(params.values()))
            with torch.no_grad():
                step = {}
                for (k, p), grad in zip(params.items(), grads):
                    # the proximal term's gradient mu (w - w_global) and SCAFFOLD's correction, for the
                    # clients still working at this step (a finished client's step is zero)
                    if mu:
                        grad = grad + mu * (p - global_dict[k])
                    if correction is not None:
                        grad = grad + correction[k]
                    if mu or correction is not None:
                        grad = grad * active[:, s].view(-1, *[1] * (p.dim() - 1))
                    step[k] = p - lr * grad
                params = step
                losses += data_loss * active[:, s]
        flat = torch.cat([p.detach().reshape(C, -1) for p in params.values()], 1).cpu()
        losses = (losses / active.sum(1).clamp(min=1)).cpu()
        return [Update(t.client, flat[c].clone(), len(t.y), float(losses[c]), len(plans[c]))
                for c, t in enumerate(tasks)]


class AutoExecutor:
    """The batched executor for two clients or more when the model trains under vmap, else the
    sequential one."""

    def __init__(self, model: nn.Module, **settings):
        self.sequential = SequentialExecutor(model, **settings)
        self.batched = BatchedExecutor(model, **settings) if batchable(model) else None

    def train(self, global_params: torch.Tensor, tasks: list[LocalTask]) -> list[Update]:
        if self.batched is not None and len(tasks) > 1:
            return self.batched.train(global_params, tasks)
        return self.sequential.train(global_params, tasks)
