"""Client training: local SGD from the global model, returning the new flat parameters.

Two executors with the same arithmetic: `SequentialExecutor` trains one client after another (the
reference); `BatchedExecutor` trains many clients of one architecture at once with torch.func
(functional_call + vmap over stacked parameters and stacked client batches), on the GPU when there is
one, replaying each step from a CUDA graph there. Both follow the same batch schedule (`schedule`), so
they agree within float rounding.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..errors import FlopynetError
from . import EXECUTORS
from .client_conv import AutocastConv2d, autocast_convolutions, autocast_inputs, client_convolutions, converted


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
    picks client_kernel for a compiled step on CUDA and grouped otherwise: on an H100 the client
    kernels took a compiled round of 100 CNN clients from 1.74 s to 1.34 s, but their Triton builds and
    autotuning add up to 16 s to a process's first round, too much for the default's short runs
    (README, "Executors on a GPU")."""

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


class MatmulConv2d(nn.Conv2d):
    """nn.Conv2d's parameters and result, computed as one matrix product over channels-last im2col
    columns. Under vmap with per-client weights nn.Conv2d becomes a grouped convolution, which cuDNN
    runs as one small kernel per client (plus layout conversions); this becomes one batched GEMM over
    clients, [clients, samples x positions, kernel x in-channels] @ [clients, kernel x in-channels,
    out-channels]. The columns are the kernel's shifted windows of the zero-padded NHWC input, side by
    side (no F.unfold, whose NCHW columns need transposing and whose backward is a slow col2im), and
    the result is returned as a channels-last NCHW view, so pooling and the next layer read NHWC.
    Zero columns pad each row to a multiple of 8 elements (3 RGB channels x 9 = 27 would leave
    bfloat16 rows off the tensor cores' 16-byte alignment)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x, weight, bias = autocast_inputs(x, weight, bias)  # columns and product in autocast's precision
        if isinstance(self.padding, str) or self.groups != 1:  # "same" / "valid", groups: left to the convolution
            return super()._conv_forward(x, weight, bias)
        if self.padding_mode != "zeros":
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            (ph, pw) = (0, 0)
        else:
            ph, pw = self.padding
        n, c, h, w = x.shape
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        out_h, out_w = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        x = nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # [n, h, w, c], zero-padded
        windows = [x[:, i * dh:i * dh + (out_h - 1) * sh + 1:sh, j * dw:j * dw + (out_w - 1) * sw + 1:sw]
                   for i in range(kh) for j in range(kw)]
        extra = -(kh * kw * c) % 8  # zero columns so a row is a multiple of 8 elements (aligned GEMMs)
        windows[-1] = nn.functional.pad(windows[-1], (0, extra))
        columns = torch.cat(windows, -1).reshape(-1, kh * kw * c + extra)
        kernel = weight.permute(2, 3, 1, 0).reshape(kh * kw * c, -1)  # rows in the columns' (i, j, c) order
        kernel = nn.functional.pad(kernel, (0, 0, 0, extra))
        out = columns @ kernel if bias is None else torch.addmm(bias, columns, kernel)
        return out.view(n, out_h, out_w, -1).permute(0, 3, 1, 2)


def matmul_convolutions(model: nn.Module) -> nn.Module:
    """A copy of model whose ungrouped 2-D convolutions are MatmulConv2d and whose grouped ones are
    AutocastConv2d."""
    return converted(model, lambda conv: MatmulConv2d if conv.groups == 1 else AutocastConv2d)


def group_size(clients: int, multiple: int | None) -> int:
    """The clients a group of `clients` is padded to: the next multiple of `multiple`, or with None of
    a quarter of the largest power of two up to `clients` (so at most a quarter of the group is idle,
    and group sizes come in four steps per doubling: 10 stays 10, 100 becomes 112)."""
    if multiple is None:
        multiple = max(1, (1 << (clients.bit_length() - 1)) // 4)
    return -(-clients // multiple) * multiple


def to_host(flat: torch.Tensor) -> torch.Tensor:
    """flat on the CPU. From a GPU through page-locked memory (PyTorch's caching host allocator
    reuses the block from round to round): copying 100 CNN clients' 165 MB to pageable memory
    took 87-114 ms of a round on an H100."""
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


# On a CPU, batching clients pays where a step is many small operators (their per-call overhead is
# shared) and loses where each layer is heavy arithmetic: the CPU is busy either way, and the batched
# step adds its padding (masked samples) and vmap's slower grouped convolutions and batched matrix
# products. Measured crossover (README, "Executors on the CPU"; `bench_fl.py crossover`): batching
# wins from 3 clients where one sample's forward pass costs at most about 48 kFLOP per linear or
# convolution layer call, and loses from about 200 kFLOP.
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
            from .models import forward_cost
            flops, calls = forward_cost(self.model, tuple(tasks[0].x.shape[1:]))
            self._light_layers = calls == 0 or flops / calls < CPU_BATCHING_MAX_LAYER_FLOPS
        return self._light_layers

    def train(self, global_params: torch.Tensor, tasks: list[LocalTask]) -> list[Update]:
        executor = self.batched if self.batches(tasks) else self.sequential
        return executor.train(global_params, tasks)


def make_executor(kind: str, model: nn.Module, **settings):
    """The executor a run names (--flopynet-executor): one of EXECUTORS. `compiled` pads groups
    (`group_size`), so clients that fail or leave mostly reuse compiled shapes."""
    if kind not in EXECUTORS:
        raise FlopynetError(f"executor {kind!r} is not one of {', '.join(EXECUTORS)}")
    if kind == "sequential":
        return SequentialExecutor(model, **settings)
    if kind == "auto":
        return AutoExecutor(model, **settings)
    if not batchable(model):
        raise FlopynetError(f"executor {kind!r} cannot train {type(model).__name__}: its BatchNorm layers keep "
                            f"running statistics, which vmap cannot update (use auto or sequential)")
    if kind == "compiled":
        return BatchedExecutor(model, compile=True, client_multiple=None, **settings)
    return BatchedExecutor(model, **settings)


_CONVOLUTIONS = {"grouped": autocast_convolutions, "matmul": matmul_convolutions, "client_kernel": client_convolutions}
