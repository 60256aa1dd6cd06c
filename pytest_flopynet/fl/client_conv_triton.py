"""The Triton kernels behind client_conv.py: implicit-GEMM 3x3 convolutions (stride 1, zero padding
1) over NHWC tensors with the clients first, one program per (tile, client).

A program of `_conv` computes a [BLOCK_M positions x BLOCK_N out-channels] tile of one client's
output as nine shifted [positions x in-channels] @ [in-channels x out-channels] products, reading
the shifted input rows straight from memory (masked at the image borders), so no im2col columns
are written. The input gradient is the same kernel on the output gradient with the flipped,
transposed kernel (client_conv.py). A program of `_weight_grad` computes one kernel offset's
[in-channels x out-channels] tile of one client's weight gradient, summing over all positions.
For layers with fewer than 16 in-channels a packed tile instead takes all 9 x in-channels (offset,
channel) pairs as one K dimension (27 for RGB, where per-offset blocks of 16 would multiply 5.3x
as many numbers). Block sizes and packing are autotuned per layer shape (Triton times the
configurations below on the first call of each shape, which the executor makes before it captures
a CUDA graph; TRITON_PRINT_AUTOTUNING=1 prints the choice). Tested on the CPU with TRITON_INTERPRET=1
(tests/test_client_conv.py: every configuration), built for sm_90 with Triton's ptxas on the CPU,
and on a GPU.
"""
# ruff: noqa: E741  (M, H, W, C, O: the convolution's sizes, named as in the papers)
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


# (BLOCK_M, BLOCK_N, BLOCK_K, PACKED, warps, stages) and (BLOCK_M, BLOCK_C, BLOCK_N, PACKED, warps,
# stages). PACKED tiles take the (kernel offset, channel) pairs as one K dimension of 9 x channels,
# for layers with few channels (the first one's 3 would pad each offset's K block to 16: 5.3x the
# products); autotuning measures both kinds there.
CONV_BLOCKS = [(128, 64, 32, 0, 4, 3), (128, 128, 64, 0, 8, 3), (128, 64, 64, 0, 4, 4), (64, 128, 64, 0, 4, 4),
               (128, 128, 32, 0, 4, 4), (128, 64, 16, 0, 4, 3), (64, 64, 16, 0, 4, 3), (128, 64, 32, 1, 4, 3),
               (64, 64, 32, 1, 4, 3)]
WEIGHT_GRAD_BLOCKS = [(64, 64, 64, 0, 4, 3), (64, 64, 128, 0, 8, 3), (128, 64, 64, 0, 8, 3), (32, 128, 128, 0, 8, 3),
                      (128, 16, 64, 0, 4, 3), (64, 16, 64, 0, 4, 3), (128, 32, 64, 1, 4, 3), (64, 32, 64, 1, 4, 3)]
CONV_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "PACKED")
WEIGHT_GRAD_NAMES = ("BLOCK_M", "BLOCK_C", "BLOCK_N", "PACKED")


def config(block: tuple[int, ...], names: tuple[str, ...]) -> triton.Config:
    return triton.Config(dict(zip(names, block)), num_warps=block[-2], num_stages=block[-1])


def _configs(blocks: list[tuple[int, ...]], names: tuple[str, ...]) -> list[triton.Config]:
    """The autotuner's configurations; the interpreter (which cannot time them) runs the first only,
    and the tests run each one by name (`conv(..., block=)`)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        blocks = blocks[:1]
    return [config(b, names) for b in blocks]


def _fitting(k_block: str, n_block: str):
    """Drop configurations whose block is larger than its dimension needs (a K block above the
    channels only multiplies zeros; tl.dot needs at least 16), and packed ones where the channels
    fill a K block of their own (16 or more). float32 (the GPU tests' exact arithmetic, not the
    executor's bfloat16) takes the smallest tile alone: tuning it would compile and time every tile
    per layer shape for nothing (its IEEE dot products take 0.5-4 s per tile to compile for an H100
    on this project's 2-core CPU)."""
    def tile(config):
        return sum(config.kwargs.values())

    def fits(config, c, o):
        k = config.kwargs
        if k["PACKED"] and c >= 16:
            return False
        return (k[k_block] <= max(16, triton.next_power_of_2(9 * c if k["PACKED"] else c))
                and k[n_block] <= max(16, triton.next_power_of_2(o)))

    def prune(configs, named_args, **kwargs):
        kept = [cf for cf in configs if fits(cf, named_args["C"], named_args["O"])] or configs
        return [min(kept, key=tile)] if named_args["x_ptr"].dtype == torch.float32 else kept
    return {"early_config_prune": prune}


@triton.autotune(_configs(CONV_BLOCKS, CONV_NAMES), key=["M", "C", "O"],
                 prune_configs_by=_fitting("BLOCK_K", "BLOCK_N"))
@triton.jit
def _conv(x_ptr, w_ptr, out_ptr, M, H, W, C, O, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_K: tl.constexpr, PACKED: tl.constexpr, PRECISION: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    client = tl.program_id(2).to(tl.int64)
    rk = tl.arange(0, BLOCK_K)
    n, y, x = rm // (H * W), (rm // W) % H, rm % W
    x_ptr += client * M * C
    w_ptr += client * 9 * C * O
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if PACKED:  # K = the 9 x C (offset, channel) pairs, decoded per column
        for k0 in range(0, 9 * C, BLOCK_K):
            kk = k0 + rk
            ij, c = kk // C, kk % C
            yy, xx = y[:, None] + (ij // 3 - 1)[None, :], x[:, None] + (ij % 3 - 1)[None, :]
            inside = (rm < M)[:, None] & (kk < 9 * C)[None, :] & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            a = tl.load(x_ptr + ((n[:, None] * H + yy) * W + xx) * C + c[None, :], mask=inside, other=0.0)
            b = tl.load(w_ptr + kk[:, None] * O + rn[None, :], mask=(kk[:, None] < 9 * C) & (rn[None, :] < O),
                        other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        # one loop over (kernel offset, channel block), as Inductor's convolution template does, so
        # that Triton pipelines the loads of the next step behind the current product (nested loops
        # with 1-2 channel blocks each left nothing to overlap)
        k_blocks = tl.cdiv(C, BLOCK_K)
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


@triton.autotune(_configs(WEIGHT_GRAD_BLOCKS, WEIGHT_GRAD_NAMES), key=["M", "C", "O"],
                 prune_configs_by=_fitting("BLOCK_C", "BLOCK_N"))
@triton.jit
def _weight_grad(x_ptr, g_ptr, out_ptr, M, H, W, C, O, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
                 BLOCK_N: tl.constexpr, PACKED: tl.constexpr, PRECISION: tl.constexpr):
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    client = tl.program_id(2).to(tl.int64)
    x_ptr += client * M * C
    g_ptr += client * M * O
    out_ptr += client * 9 * C * O
    acc = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    if PACKED:  # a block of rows of the [9 x C, O] gradient, (offset, channel) decoded per row
        rows = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        ij, rc = rows // C, rows % C
        dy, dx = ij // 3 - 1, ij % 3 - 1
        for m0 in range(0, M, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            n, y, x = rm // (H * W), (rm // W) % H, rm % W
            yy, xx = y[None, :] + dy[:, None], x[None, :] + dx[:, None]
            inside = (rows < 9 * C)[:, None] & (rm < M)[None, :] & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            a = tl.load(x_ptr + ((n[None, :] * H + yy) * W + xx) * C + rc[:, None], mask=inside, other=0.0)
            g = tl.load(g_ptr + rm[:, None] * O + rn[None, :], mask=(rm[:, None] < M) & (rn[None, :] < O),
                        other=0.0)
            acc = tl.dot(a, g, acc, input_precision=PRECISION)
        tl.store(out_ptr + rows[:, None] * O + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(rows[:, None] < 9 * C) & (rn[None, :] < O))
    else:  # one kernel offset's block of channels
        c_blocks = tl.cdiv(C, BLOCK_C)
        ij = tl.program_id(0) // c_blocks
        rc = (tl.program_id(0) % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        dy, dx = ij // 3 - 1, ij % 3 - 1
        for m0 in range(0, M, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            n, y, x = rm // (H * W), (rm // W) % H, rm % W
            yy, xx = y + dy, x + dx
            inside = (rm < M) & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            row = ((n * H + yy) * W + xx) * C
            a = tl.load(x_ptr + row[None, :] + rc[:, None], mask=inside[None, :] & (rc[:, None] < C), other=0.0)
            g = tl.load(g_ptr + rm[:, None] * O + rn[None, :], mask=(rm[:, None] < M) & (rn[None, :] < O),
                        other=0.0)
            acc = tl.dot(a, g, acc, input_precision=PRECISION)
        tl.store(out_ptr + (ij * C + rc[:, None]) * O + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(rc[:, None] < C) & (rn[None, :] < O))


def _precision(dtype: torch.dtype) -> str | None:
    """float32 stays float32 unless PyTorch's matmuls may use TF32 (the GPU tests turn that off);
    other types take tl.dot's default."""
    if dtype != torch.float32:
        return None
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _launch(kernel, grid, args: tuple, dtype: torch.dtype, block: triton.Config | None) -> None:
    """Autotuned, or with the given configuration (the tests run each one)."""
    if block is None:
        kernel[grid](*args, PRECISION=_precision(dtype))
    else:
        kernel.fn[grid](*args, **block.kwargs, PRECISION=_precision(dtype), num_warps=block.num_warps,
                        num_stages=block.num_stages)


def conv(x: torch.Tensor, weight: torch.Tensor, block: triton.Config | None = None) -> torch.Tensor:
    """x [clients, n, h, w, c] and weight [clients, 3, 3, c, out], contiguous -> [clients, n, h, w, out]."""
    clients, n, h, w, c = x.shape
    o = weight.shape[-1]
    out = torch.empty(clients, n, h, w, o, dtype=x.dtype, device=x.device)

    def grid(meta):
        return triton.cdiv(n * h * w, meta["BLOCK_M"]), triton.cdiv(o, meta["BLOCK_N"]), clients
    _launch(_conv, grid, (x, weight.to(x.dtype), out, n * h * w, h, w, c, o), x.dtype, block)
    return out


def weight_grad(x: torch.Tensor, grad: torch.Tensor, block: triton.Config | None = None) -> torch.Tensor:
    """x [clients, n, h, w, c] and grad [clients, n, h, w, out], contiguous -> [clients, 3, 3, c, out]."""
    clients, n, h, w, c = x.shape
    o = grad.shape[-1]
    out = torch.empty(clients, 3, 3, c, o, dtype=x.dtype, device=x.device)

    def grid(meta):
        rows = triton.cdiv(9 * c, meta["BLOCK_C"]) if meta["PACKED"] else 9 * triton.cdiv(c, meta["BLOCK_C"])
        return rows, triton.cdiv(o, meta["BLOCK_N"]), clients
    _launch(_weight_grad, grid, (x, grad.to(x.dtype), out, n * h * w, h, w, c, o), x.dtype, block)
    return out
