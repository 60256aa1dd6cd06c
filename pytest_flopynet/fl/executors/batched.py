"""Many clients of one architecture trained at once: torch.func's vmap over stacked parameters and
stacked client batches, on fixed buffers replayed from a CUDA graph on a GPU (and torch.compile'd
on request)."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ..client_conv import autocast_convolutions, client_convolutions, matmul_convolutions
from . import LocalTask, Update, schedule


class BatchedExecutor:
    """Trains a group of clients together: one vmapped SGD step advances every client by one of its
    own mini-batches. Clients with fewer steps or a smaller last batch are masked (a masked sample adds
    nothing to the loss, a finished client's step is zero), and clients are bucketed by step count so
    no bucket wastes more than half of its work on masked steps.

    A vmapped step is hundreds of small kernels, so on a GPU the Python that launches them, not the
    arithmetic, sets the pace. On a CUDA device the step is therefore captured once in a CUDA graph and
    replayed (`cuda_graphs`), and `compile=True` has torch.compile (Inductor) fuse it first. Both need
    fixed shapes, so the step works on fixed buffers (`_GroupStep`), one set per group shape;
    `client_multiple` pads groups with idle clients so a changing number of clients reuses fewer
    shapes (fewer compilations, at the price of the idle clients' arithmetic); None picks the multiple
    by group size (`group_size`).

    `convolutions` says how a layer's per-client convolutions run: "grouped" (vmap's own rule: one
    grouped convolution, which cuDNN computes client by client), "matmul" (im2col and one batched
    matrix product, `MatmulConv2d`) or "client_kernel" (3x3 ones as one Triton kernel with the clients
    as a grid dimension on CUDA, `client_conv.ClientConv2d`; a grouped convolution elsewhere). None
    picks client_kernel for a compiled step on CUDA, where it is fastest, and grouped otherwise: the
    client kernels' Triton builds and autotuning slow a process's first round too much for short,
    uncompiled runs (figures: docs/executors.md)."""

    def __init__(self, model: nn.Module, *, local_epochs: int, batch_size: int, learning_rate: float, mu: float = 0.0,
                 device: str | torch.device | None = None, mixed_precision: bool | None = None,
                 cuda_graphs: bool | None = None, compile: bool = False, client_multiple: int | None = 1,
                 convolutions: str | None = None):
        self.model = model
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mu = mu
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        cuda = self.device.type == "cuda"
        # on a GPU, forward and backward run in bfloat16 (weights and updates stay float32); on the
        # CPU everything is float32, so the batched executor matches the sequential one there
        self.mixed_precision = cuda if mixed_precision is None else mixed_precision
        self.cuda_graphs = cuda if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not cuda:
            raise ValueError(f"CUDA graphs need a CUDA device, the executor runs on {self.device}")
        self.compile = compile
        self.client_multiple = client_multiple
        if convolutions is None:
            convolutions = "client_kernel" if compile and cuda else "grouped"
        if convolutions not in _CONVOLUTIONS:
            raise ValueError(f"convolutions must be one of {', '.join(_CONVOLUTIONS)}, not {convolutions!r}")
        # the module the step calls: a copy whose convolutions run as `convolutions` says, every one
        # in autocast's precision (autocast does not reach convolutions under vmap by itself)
        self.convolutions = convolutions
        self.step_model = _CONVOLUTIONS[convolutions](model)
        if cuda:
            torch.backends.cudnn.benchmark = True
        self._steps: dict[tuple, _GroupStep] = {}  # by shape; a few, each holding its buffers (and graph)
        self._functions: dict[tuple[bool, bool], object] = {}

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

    def _step_function(self, proximal: bool, corrected: bool):
        """The SGD step of every client at once: (parameters, batch, mask, active, anchor, correction)
        -> (new parameters, each client's loss times active). The parameters are leaves that require
        grad; the forward pass is vmapped over clients and torch.autograd.grad differentiates the
        summed losses. Clients share no parameters, so that is each client's own gradient."""
        key = (proximal, corrected)
        if key in self._functions:
            return self._functions[key]
        from torch.func import functional_call, vmap
        model, lr, mu = self.step_model, self.learning_rate, self.mu
        buffers = {k: v.to(self.device) for k, v in self.model.named_buffers()}
        device_type, bf16 = self.device.type, self.mixed_precision

        def client_loss(params, xb, yb, mb):  # masked mean cross-entropy of one client's batch
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
                logits = functional_call(model, (params, buffers), (xb,))
            ce = nn.functional.cross_entropy(logits.float(), yb, reduction="none")
            return (ce * mb).sum() / mb.sum().clamp(min=1)

        def update(params, grads, losses, active, anchor, correction):
            new = {}
            for (k, p), grad in zip(params.items(), grads):
                # the proximal term's gradient mu (w - w_global) and SCAFFOLD's correction, for the
                # clients still working at this step (a finished client's step is zero)
                if proximal:
                    grad = grad + mu * (p - anchor[k])
                if corrected:
                    grad = grad + correction[k]
                if proximal or corrected:
                    grad = grad * active.view(-1, *[1] * (p.dim() - 1))
                new[k] = p - lr * grad
            return new, losses * active

        forward = vmap(client_loss)
        if self.compile:  # the forward pass and its backward (AOTAutograd's), and the update
            forward = torch.compile(forward, fullgraph=True, dynamic=False)
            update = torch.compile(update, fullgraph=True, dynamic=False)

        def step(params, xb, yb, mb, active, anchor, correction):
            losses = forward(params, xb, yb, mb)
            grads = torch.autograd.grad(losses.sum(), list(params.values()))
            with torch.no_grad():
                return update(params, grads, losses, active, anchor, correction)

        self._functions[key] = step
        return step

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, pos = {}, 0
        for name, p in self.model.named_parameters():
            out[name] = flat[..., pos:pos + p.numel()].reshape(*flat.shape[:-1], *p.shape)
            pos += p.numel()
        return out

    def _group_step(self, clients: int, sample_shape: tuple, x_dtype: torch.dtype, corrected: bool) -> _GroupStep:
        proximal = bool(self.mu)
        key = (clients, sample_shape, x_dtype, proximal, corrected)
        if key not in self._steps:
            if len(self._steps) >= 8:  # each keeps its buffers (and graph memory): keep the latest few
                self._steps.pop(next(iter(self._steps)))
            template = {k: p.detach() for k, p in self.model.named_parameters()}
            self._steps[key] = _GroupStep(self._step_function(proximal, corrected), template, clients,
                                          self.batch_size, sample_shape, x_dtype, corrected, self.device,
                                          self.cuda_graphs)
        return self._steps[key]

    def _train_group(self, global_params: torch.Tensor, tasks: list[LocalTask], plans: list[list[np.ndarray]]):
        dev, C, B = self.device, len(tasks), self.batch_size
        padded = group_size(C, self.client_multiple)  # idle clients: no samples, no steps
        T = max(len(p) for p in plans)
        n_max = max(len(t.y) for t in tasks)
        sample_shape = tuple(tasks[0].x.shape[1:])
        # rows of the clients' stacked data each step reads (a masked slot reads row 0 and counts for nothing)
        rows = np.zeros((T, padded, B), dtype=np.int64)
        mask = np.zeros((T, padded, B), dtype=np.float32)
        for c, plan in enumerate(plans):
            for s, batch in enumerate(plan):
                rows[s, c, :len(batch)] = batch + c * n_max
                mask[s, c, :len(batch)] = 1
        rows, mask = torch.from_numpy(rows), torch.from_numpy(mask)
        active = (mask.sum(2) > 0).float()
        x = torch.zeros(C * n_max, *sample_shape, dtype=tasks[0].x.dtype, device=dev)
        y = torch.zeros(C * n_max, dtype=torch.long, device=dev)
        for c, t in enumerate(tasks):
            x[c * n_max:c * n_max + len(t.y)], y[c * n_max:c * n_max + len(t.y)] = t.x, t.y
        rows, mask, active = (v.to(dev) for v in (rows, mask, active))
        corrected = any(t.correction is not None for t in tasks)
        step = self._group_step(padded, sample_shape, x.dtype, corrected)
        correction = None
        if corrected:
            correction = self._unflatten(torch.stack([t.correction if t.correction is not None
                                                      else torch.zeros_like(global_params) for t in tasks]).to(dev))
        step.load(self._unflatten(global_params.to(dev)), correction)
        for s in range(T):
            torch.index_select(x, 0, rows[s].view(-1), out=step.x.view(padded * B, *sample_shape))
            torch.index_select(y, 0, rows[s].view(-1), out=step.y.view(-1))
            step.mask.copy_(mask[s])
            step.active.copy_(active[s])
            step()
        flat = to_host(torch.cat([p.detach().reshape(padded, -1)[:C] for p in step.params.values()], 1))
        losses = (step.loss[:C] / active[:, :C].sum(0).clamp(min=1)).cpu()
        return [Update(t.client, flat[c].clone(), len(t.y), float(losses[c]), len(plans[c]))
                for c, t in enumerate(tasks)]


def group_size(clients: int, multiple: int | None) -> int:
    """The clients a group of `clients` is padded to: the next multiple of `multiple`, or with None of
    a quarter of the largest power of two up to `clients` (so at most a quarter of the group is idle,
    and group sizes come in four steps per doubling: 10 stays 10, 100 becomes 112)."""
    if multiple is None:
        multiple = max(1, (1 << (clients.bit_length() - 1)) // 4)
    return -(-clients // multiple) * multiple


def to_host(flat: torch.Tensor) -> torch.Tensor:
    """flat on the CPU. From a GPU through page-locked memory (PyTorch's caching host allocator
    reuses the block from round to round): a copy to pageable memory costs a noticeable share of a
    GPU round (docs/executors.md)."""
    if not flat.is_cuda:
        return flat.cpu()
    host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
    host.copy_(flat, non_blocking=True)
    torch.cuda.current_stream(flat.device).synchronize()
    return host


class _GroupStep:
    """One SGD step of a group of fixed shape, on fixed buffers: the caller copies a step's batch into
    x, y, mask and active, then calls; parameters and loss sums change in place. With `graph` the
    step's kernels are recorded once in a CUDA graph and each call replays them (PyTorch's
    whole-network capture recipe: warm-up on a side stream, then capture)."""

    def __init__(self, fn, template: dict[str, torch.Tensor], clients: int, batch: int, sample_shape: tuple,
                 x_dtype: torch.dtype, corrected: bool, device: torch.device, graph: bool):
        def zeros(*shape, dtype=torch.float32):
            return torch.zeros(*shape, dtype=dtype, device=device)
        self.fn = fn
        self.params = {k: zeros(clients, *p.shape).requires_grad_() for k, p in template.items()}
        self.anchor = {k: zeros(*p.shape) for k, p in template.items()}
        self.correction = {k: zeros(clients, *p.shape) for k, p in template.items()} if corrected else None
        self.x = zeros(clients, batch, *sample_shape, dtype=x_dtype)
        self.y = zeros(clients, batch, dtype=torch.long)
        self.mask, self.active, self.loss = zeros(clients, batch), zeros(clients), zeros(clients)
        self.graph = None
        if graph:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # cuDNN's algorithm search, compilation and lazy set-up happen here
                for _ in range(3):
                    self._run()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self._run()
                self.graph = graph
            except RuntimeError as exc:  # an operation that cannot be captured: correct, only slower
                warnings.warn(f"flopynet: the batched training step could not be captured in a CUDA graph "
                              f"({str(exc).splitlines()[0]}); it runs eagerly", RuntimeWarning, stacklevel=2)

    def _run(self) -> None:
        with torch.enable_grad():
            new, losses = self.fn(self.params, self.x, self.y, self.mask, self.active, self.anchor, self.correction)
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(new[k])
            self.loss.add_(losses)

    @torch.no_grad()
    def load(self, anchor: dict[str, torch.Tensor], correction: dict[str, torch.Tensor] | None) -> None:
        """Every client starts from the global model (the anchor of FedProx's proximal term)."""
        for k, p in self.params.items():
            self.anchor[k].copy_(anchor[k])
            p.copy_(anchor[k].expand_as(p))
            if self.correction is not None:
                self.correction[k].zero_()
                self.correction[k][:len(correction[k])].copy_(correction[k])
        self.loss.zero_()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._run()


_CONVOLUTIONS = {"grouped": autocast_convolutions, "matmul": matmul_convolutions, "client_kernel": client_convolutions}
