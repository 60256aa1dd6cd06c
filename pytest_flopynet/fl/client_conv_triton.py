"""The Triton kernels behind client_conv.py: implicit-GEMM 3x3 convolutions (stride 1, zero padding
1) over NHWC tensors with the clients first, one program per (tile, client).

A program of `_conv` computes a [BLOCK_M positions x BLOCK_N out-channels] tile of one client's
output as nine shifted [positions x in-channels] @ [in-channels x out-channels] products, reading
the shifted input rows straight from memory (masked at the image borders), so no im2col columns
are written. The input gradient is the same kernel on the output gradient with the flipped,
transposed kernel (client_conv.py). A program of `_weight_grad` computes one kernel offset's
[in-channels x out-channels] tile of one client's weight gradient, summing over all positions.
Block sizes are autotuned per layer shape (Triton benchmarks the configurations below on the first
call of each shape, which the executor makes before it captures a CUDA graph; TRITON_PRINT_AUTOTUNING=1
prints the choice). Tested on the CPU with TRITON_INTERPRET=1 (tests/test_client_conv.py), where a
single configuration runs, and on a GPU.
"""
# ruff: noqa: E741  (M, H, W, C, O: the convolution's sizes, named as in the papers)
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def _configs(blocks: list[tuple[int, int, int, int, int]], names: tuple[str, str, str]) -> list[triton.Config]:
    """(three block sizes, warps, stages) -> configurations; the interpreter runs the first only."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        blocks = blocks[:1]
    return [triton.Config(dict(zip(names, b[:3])), num_warps=b[3], num_stages=b[4]) for b in blocks]


def _fitting(sizes: dict[str, str]):
    """Drop configurations whose block is larger than its dimension needs (a K block above the
    channels only multiplies zeros; tl.dot needs at least 16). float32 (the GPU tests' exact
    arithmetic, not the executor's bfloat16) takes the smallest tile alone: tuning it would compile
    and time every tile per layer shape for nothing (its IEEE dot products take 0.5-4 s per tile to
    compile for an H100 on this project's 2-core CPU)."""
    def tile(config):
        return sum(config.kwargs.values())

    def prune(configs, named_args, **kwargs):
        need = {block: max(16, triton.next_power_of_2(named_args[dim])) for block, dim in sizes.items()}
        kept = [c for c in configs if all(c.kwargs[block] <= n for block, n in need.items())] or configs
        return [min(kept, key=tile)] if named_args["x_ptr"].dtype == torch.float32 else kept
    return {"early_config_prune": prune}


@triton.autotune(
    _configs([(128, 64, 32, 4, 3), (128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
              (128, 128, 32, 4, 4), (128, 64, 16, 4, 3), (64, 64, 16, 4, 3)], ("BLOCK_M", "BLOCK_N", "BLOCK_K")),
    key=["M", "C", "O"], prune_configs_by=_fitting({"BLOCK_N": "O", "BLOCK_K": "C"}))

@triton.jit
def _conv(x_ptr, w_ptr, out_ptr, M, H, W, C, O, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    client = tl.program_id(2).to(tl.int64)
    rk = tl.arange(0, BLOCK_K)
    n, y, x = rm // (H * W), (rm // W) % H, rm % W
    x_ptr += client * M * C
    w_ptr += client * 9 * C * O
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_blocks = tl.cdiv(C, BLOCK_K)
    # one loop over (kernel offset, channel block), as Inductor's convolution template does, so that
    # Triton pipelines the loads of the next step behind the current product (nested loops with 1-2
    # channel blocks each left nothing to overlap)
    for t in range(9 * k_blocks):
        ij = t // k_blocks
        k = (t % k_blocks) * BLOCK_K + rk
        yy, xx = y + (ij // 3 - 1), x + (ij % 3 - 1)
        inside = (rm < M) & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        row = ((n * H + yy) * W + xx) * C
        a = tl.load(x_ptr + row[:, None] + k[None, :], mask=inside[:, None] & (k[None, :] < C), other=0.0)
        b = tl.load(w_ptr + (ij * C + k[:, None]) * O + rn[None, :], mask=(k[:, None] < C) & (rn[None, :] < O),
                    other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    tl.store(out_ptr + client * M * O + rm[:, None] * O + rn[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < O))


@triton.autotune(
    _configs([(64, 64, 64, 4, 3), (64, 64, 128, 8, 3), (128, 64, 64, 8, 3), (32, 128, 128, 8, 3),
              (128, 16, 64, 4, 3), (64, 16, 64, 4, 3)], ("BLOCK_M", "BLOCK_C", "BLOCK_N")),
    key=["M", "C", "O"], prune_configs_by=_fitting({"BLOCK_C": "C", "BLOCK_N": "O"}))
@triton.jit
def _weight_grad(x_ptr, g_ptr, out_ptr, M, H, W, C, O, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
                 BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    c_blocks = tl.cdiv(C, BLOCK_C)
    ij = tl.program_id(0) // c_blocks
    rc = (tl.program_id(0) % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    client = tl.program_id(2).to(tl.int64)
    x_ptr += client * M * C
    g_ptr += client * M * O
    dy, dx = ij // 3 - 1, ij % 3 - 1
    acc = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        n, y, x = rm // (H * W), (rm // W) % H, rm % W
        yy, xx = y + dy, x + dx
        inside = (rm < M) & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        row = ((n * H + yy) * W + xx) * C
        a = tl.load(x_ptr + row[None, :] + rc[:, None], mask=inside[None, :] & (rc[:, None] < C), other=0.0)
        g = tl.load(g_ptr + rm[:, None] * O + rn[None, :], mask=(rm[:, None] < M) & (rn[None, :] < O), other=0.0)
        acc = tl.dot(a, g, acc, input_precision=PRECISION)
    tl.store(out_ptr + client * 9 * C * O + (ij * C + rc[:, None]) * O + rn[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=(rc[:, None] < C) & (rn[None, :] < O))


def _precision(dtype: torch.dtype) -> str | None:
    """float32 stays float32 unless PyTorch's matmuls may use TF32 (the GPU tests turn that off);
    other types take tl.dot's default."""
    if dtype != torch.float32:
        return None
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [clients, n, h, w, c] and weight [clients, 3, 3, c, out], contiguous -> [clients, n, h, w, out]."""
    clients, n, h, w, c = x.shape
    o = weight.shape[-1]
    out = torch.empty(clients, n, h, w, o, dtype=x.dtype, device=x.device)

    def grid(meta):
        return triton.cdiv(n * h * w, meta["BLOCK_M"]), triton.cdiv(o, meta["BLOCK_N"]), clients
    _conv[grid](x, weight.to(x.dtype), out, n * h * w, h, w, c, o, PRECISION=_precision(x.dtype))
    return out


def weight_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """x [clients, n, h, w, c] and grad [clients, n, h, w, out], contiguous -> [clients, 3, 3, c, out]."""
    clients, n, h, w, c = x.shape
    o = grad.shape[-1]
    out = torch.empty(clients, 3, 3, c, o, dtype=x.dtype, device=x.device)

    def grid(meta):
        return 9 * triton.cdiv(c, meta["BLOCK_C"]), triton.cdiv(o, meta["BLOCK_N"]), clients
    _weight_grad[grid](x, grad.to(x.dtype), out, n * h * w, h, w, c, o, PRECISION=_precision(x.dtype))
    return out
