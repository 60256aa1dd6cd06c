"""Convolutions of many clients at once under the batched executor's vmap: every client's own weights,
in the precision autocast asks for, and the 3x3 ones in one kernel launch for all clients.

Autocast does not reach a convolution under vmap (torch 2.13 on the CPU: vmap(F.conv2d) inside a bfloat16
autocast region returns float32, while vmap(F.linear) returns bfloat16), so the executor's
convolutions cast their inputs themselves (`AutocastConv2d`, `autocast_inputs`).

Under vmap a per-client nn.Conv2d becomes a grouped convolution, and cuDNN computes a grouped
convolution's gradients with one small kernel per client plus layout conversions: at 100 clients on
an H100 that was 60% of a training step's kernel time (docs/measurements.md, "Executors on a GPU"). Here a client
is one more grid dimension of a Triton implicit-GEMM kernel, so a layer's forward pass, input
gradient and weight gradient are one launch each, whatever the number of clients, and the im2col
columns are never written to memory (the matmul route spent its time writing them).

The operators take NHWC tensors with the clients first:
  client_conv3x3(x [clients, n, h, w, c], weight [clients, 3, 3, c, out]) -> [clients, n, h, w, out]
(stride 1, zero padding 1: the seed's CNN). Off CUDA they run as grouped convolutions, the reference
the Triton kernels are tested against. They are torch.library custom ops with vmap rules and an
autograd formula, so vmap, autograd, torch.compile and CUDA-graph capture see them as single
operators. torch.func.grad cannot differentiate them (custom ops' autograd is not a functorch
transform: pytorch/pytorch#168393), which is why the executor takes its gradients with
torch.autograd.grad around the vmapped forward pass.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def autocast_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """A convolution's inputs in the autocast dtype where autocast is on (as autocast casts conv2d's
    inputs outside vmap), else unchanged."""
    if not torch.is_autocast_enabled(x.device.type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(x.device.type)
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


class AutocastConv2d(nn.Conv2d):
    """nn.Conv2d that honours autocast under vmap too."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return super()._conv_forward(*autocast_inputs(x, weight, bias))


def converted(model: nn.Module, kind) -> nn.Module:
    """A copy of model whose plain nn.Conv2d modules take the class kind(module) (same parameter
    names, so the executor's parameters fit it)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = kind(module)
    return model


def autocast_convolutions(model: nn.Module) -> nn.Module:
    """A copy of model whose convolutions are AutocastConv2d."""
    return converted(model, lambda conv: AutocastConv2d)


def _conv_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The grouped convolution that the Triton kernel computes."""
    clients, n, h, w, c = x.shape
    out = torch.nn.functional.conv2d(x.permute(1, 0, 4, 2, 3).reshape(n, clients * c, h, w),
                                     weight.permute(0, 4, 3, 1, 2).reshape(-1, c, 3, 3), padding=1, groups=clients)
    return out.reshape(n, clients, -1, h, w).permute(1, 0, 3, 4, 2).contiguous()


def _weight_grad_reference(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    clients, n, h, w, c = x.shape
    out = grad.shape[-1]
    g = torch.nn.grad.conv2d_weight(x.permute(1, 0, 4, 2, 3).reshape(n, clients * c, h, w), (clients * out, c, 3, 3),
                                    grad.permute(1, 0, 4, 2, 3).reshape(n, clients * out, h, w), padding=1,
                                    groups=clients)
    return g.reshape(clients, out, c, 3, 3).permute(0, 3, 4, 2, 1).contiguous()


@torch.library.custom_op("flopynet::client_conv3x3", mutates_args=())
def client_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if x.is_cuda:
        from .client_conv_triton import conv  # Triton ships with CUDA builds of torch
        return conv(x.contiguous(), weight.contiguous())
    return _conv_reference(x, weight)


@client_conv3x3.register_fake
def _(x, weight):
    return x.new_empty(*x.shape[:-1], weight.shape[-1])


@torch.library.custom_op("flopynet::client_conv3x3_weight_grad", mutates_args=())
def client_conv3x3_weight_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    if x.is_cuda:
        from .client_conv_triton import weight_grad
        return weight_grad(x.contiguous(), grad.contiguous())
    return _weight_grad_reference(x, grad)


@client_conv3x3_weight_grad.register_fake
def _(x, grad):
    return x.new_empty(x.shape[0], 3, 3, x.shape[-1], grad.shape[-1])


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    # the input gradient is the convolution of grad with the flipped, transposed kernel
    grad_x = client_conv3x3(grad, weight.flip(1, 2).transpose(3, 4)) if ctx.needs_input_grad[0] else None
    grad_w = client_conv3x3_weight_grad(x, grad) if ctx.needs_input_grad[1] else None
    return grad_x, grad_w


client_conv3x3.register_autograd(_backward, setup_context=_setup_context)


def _clients_first(info, tensors, in_dims):
    """Fold vmap's batch dimension into the operators' clients dimension."""
    out = []
    for t, d in zip(tensors, in_dims):
        t = t.expand(info.batch_size, *t.shape) if d is None else t.movedim(d, 0)
        out.append(t.reshape(-1, *t.shape[2:]))
    return out


@client_conv3x3.register_vmap
def _(info, in_dims, x, weight):
    out = client_conv3x3(*_clients_first(info, (x, weight), in_dims))
    return out.reshape(info.batch_size, -1, *out.shape[1:]), 0


@client_conv3x3_weight_grad.register_vmap
def _(info, in_dims, x, grad):
    out = client_conv3x3_weight_grad(*_clients_first(info, (x, grad), in_dims))
    return out.reshape(info.batch_size, -1, *out.shape[1:]), 0


class ClientConv2d(nn.Conv2d):
    """nn.Conv2d's parameters and result through client_conv3x3 (3x3, stride 1, zero padding 1,
    ungrouped; `client_convolutions` converts only those). Under the executor's vmap, every client's
    convolution of a layer is one kernel launch."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x, weight, bias = autocast_inputs(x, weight, bias)  # autocast does not cast custom operators either
        out = client_conv3x3(x.permute(0, 2, 3, 1).unsqueeze(0), weight.permute(2, 3, 1, 0).unsqueeze(0))[0]
        if bias is not None:
            out = out + bias
        return out.permute(0, 3, 1, 2)  # NCHW view of NHWC memory (channels-last)


def fits(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def client_convolutions(model: nn.Module) -> nn.Module:
    """A copy of model whose 3x3, stride-1, padding-1 convolutions are ClientConv2d and whose other
    convolutions are AutocastConv2d."""
    return converted(model, lambda conv: ClientConv2d if fits(conv) else AutocastConv2d)


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
