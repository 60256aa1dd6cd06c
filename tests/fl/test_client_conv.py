"""The per-client convolution kernels (pytest_flopynet/fl/client_conv.py): the Triton kernels against
grouped convolutions, run by Triton's interpreter on the CPU, and the operators' gradients and vmap
rules against nn.Conv2d's."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.func import functional_call, grad, vmap

from pytest_flopynet.fl.client_conv import (AutocastConv2d, ClientConv2d, autocast_convolutions, client_conv3x3,
                                           client_convolutions)


NO_TRITON = "triton is not installed (the kernels extra has it: pip install -e '.[kernels]')"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason=NO_TRITON)
def test_the_triton_kernels_equal_grouped_convolutions():
    """In a subprocess with TRITON_INTERPRET=1 (Triton reads it when the kernels are defined), every
    autotuning configuration, packed or not: odd sizes that leave partial tiles, in-channels below,
    at and above a block, one to three clients. Both sides in float32; the kernels accumulate in
    another order, hence 1e-4."""
    script = textwrap.dedent("""
        import torch
        from pytest_flopynet.fl import client_conv_triton as kernels
        from pytest_flopynet.fl.client_conv import _conv_reference, _weight_grad_reference
        torch.manual_seed(0)
        runs = 0
        for clients, n, h, w, c, o in [(2, 3, 5, 7, 3, 8), (3, 2, 4, 4, 20, 70), (1, 1, 3, 2, 33, 130), (2, 2, 6, 6, 16, 64)]:
            x, weight = torch.randn(clients, n, h, w, c), torch.randn(clients, 3, 3, c, o)
            g = torch.randn(clients, n, h, w, o)
            cases = [("conv", kernels.conv, (x, weight), _conv_reference(x, weight), kernels.CONV_BLOCKS, kernels.CONV_NAMES),
                     ("weight_grad", kernels.weight_grad, (x, g), _weight_grad_reference(x, g),
                      kernels.WEIGHT_GRAD_BLOCKS, kernels.WEIGHT_GRAD_NAMES)]
            for name, kernel, args, want, blocks, names in cases:
                for block in blocks:
                    got = kernel(*args, block=kernels.config(block, names))
                    assert got.shape == want.shape, (name, got.shape, want.shape)
                    error = ((got - want).norm() / want.norm()).item()
                    assert error < 1e-4, (name, block, clients, n, h, w, c, o, error)
                    runs += 1
        print("kernels agree in", runs, "runs")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "kernels agree in 68 runs" in run.stdout  # 4 shapes x (9 + 8) configurations


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason=NO_TRITON)
def test_autotuning_tries_only_blocks_a_layer_can_fill():
    """The seed's first layer (3 in-channels, 64 out) and its last (128 in, 256 out): a K block above
    the in-channels (rounded up to a power of two, at least 16; 9 x in-channels for a packed tile)
    or an N block above the out-channels is never benchmarked, and packed tiles only where the
    channels are fewer than 16."""
    from pytest_flopynet.fl.client_conv_triton import _conv, _weight_grad
    bf16, fp32 = torch.empty(0, dtype=torch.bfloat16), torch.empty(0)
    for kernel, k_block, n_block in [(_conv, "BLOCK_K", "BLOCK_N"), (_weight_grad, "BLOCK_C", "BLOCK_N")]:
        prune = kernel.early_config_prune
        first = prune(kernel.configs, {"x_ptr": bf16, "M": 32 * 32 * 32, "C": 3, "O": 64})
        assert sorted((c.kwargs["PACKED"], c.kwargs[k_block]) for c in first) == [(0, 16), (0, 16), (1, 32), (1, 32)]
        assert all(c.kwargs[n_block] <= 64 for c in first)
        last = prune(kernel.configs, {"x_ptr": bf16, "M": 32 * 8 * 8, "C": 128, "O": 256})
        assert last == [c for c in kernel.configs if not c.kwargs["PACKED"]]  # every unpacked block fits
        assert len({c.kwargs[k_block] for c in last}) >= 2
        # float32: one configuration, the smallest tile
        (exact,) = prune(kernel.configs, {"x_ptr": fp32, "M": 32 * 8 * 8, "C": 128, "O": 256})
        assert sum(exact.kwargs.values()) == min(sum(c.kwargs.values()) for c in last)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason=NO_TRITON)
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")  # Triton 3.9 announcing 3.10's default
def test_every_autotuning_configuration_compiles_for_an_h100():
    """Without a GPU: Triton's own compiler and its bundled ptxas build each bfloat16 configuration
    for sm_90 (an H100), and each fits the 227 KiB of shared memory a block may have there; a
    configuration that cannot build would otherwise first show on a GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pytest_flopynet.fl.client_conv_triton import _conv, _weight_grad
    for kernel in (_conv, _weight_grad):
        fn = kernel.fn
        pointers = [name for name in fn.arg_names if name.endswith("_ptr")]
        signature = {**{name: "*bf16" for name in pointers}, **{name: "i32" for name in "MHWCO"}}
        for config in kernel.configs:
            constants = {**config.kwargs, "PRECISION": None}
            compiled = triton.compile(ASTSource(fn, {**signature, **{k: "constexpr" for k in constants}}, constants),
                                      target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": config.num_warps, "num_stages": config.num_stages})
            assert 0 < compiled.metadata.shared <= 227 * 1024, (fn.__name__, config)
            assert ".target sm_90" in compiled.asm["ptx"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the compiled Triton kernels run on a GPU only")
def test_the_autotuned_kernels_on_a_gpu_equal_grouped_convolutions():
    """The seed's three layers (3->64 at 32x32, 64->128 at 16x16, 128->256 at 8x8; 2 clients of 32
    images, the benchmark's block of work per client), each kernel autotuned, in bfloat16: the
    forward pass, the input gradient (the forward kernel on the flipped, transposed weights) and the
    weight gradient against cuDNN's grouped convolutions in float32 (TF32 off) of the same rounded
    inputs. What differs is the order of summation and the bfloat16 result (8 bits), hence 1e-2;
    a wrong index is off by far more."""
    from pytest_flopynet.fl import client_conv_triton as kernels
    from pytest_flopynet.fl.client_conv import _conv_reference, _weight_grad_reference
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.manual_seed(0)
        for c, o, size in [(3, 64, 32), (64, 128, 16), (128, 256, 8)]:
            x = torch.randn(2, 32, size, size, c, device="cuda", dtype=torch.bfloat16)
            weight = torch.randn(2, 3, 3, c, o, device="cuda", dtype=torch.bfloat16)
            g = torch.randn(2, 32, size, size, o, device="cuda", dtype=torch.bfloat16)
            flipped = weight.flip(1, 2).transpose(3, 4).contiguous()
            for name, got, want in [
                    ("conv", kernels.conv(x, weight), _conv_reference(x.float(), weight.float())),
                    ("input grad", kernels.conv(g, flipped), _conv_reference(g.float(), flipped.float())),
                    ("weight grad", kernels.weight_grad(x, g), _weight_grad_reference(x.float(), g.float()))]:
                assert got.dtype == torch.bfloat16 and got.shape == want.shape, name
                error = ((got.float() - want).norm() / want.norm()).item()
                assert error < 1e-2, (name, c, o, error)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def test_the_reference_operator_is_the_per_client_convolution():
    """client_conv3x3 off CUDA, checked against each client's own F.conv2d (NCHW)."""
    torch.manual_seed(0)
    x, weight = torch.randn(3, 2, 5, 6, 4), torch.randn(3, 3, 3, 4, 7)
    out = client_conv3x3(x, weight)
    for k in range(3):
        want = torch.nn.functional.conv2d(x[k].permute(0, 3, 1, 2), weight[k].permute(3, 2, 0, 1), padding=1)
        assert torch.allclose(out[k], want.permute(0, 2, 3, 1), atol=1e-5)


def test_a_client_convolution_and_its_gradients_equal_conv2d_under_vmap():
    """Three clients' own weights, a vmapped forward pass differentiated by torch.autograd.grad, as
    the batched executor does it: the input, weight and bias gradients equal those of nn.Conv2d."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    client = client_convolutions(torch.nn.Sequential(conv))[0]
    assert type(client) is ClientConv2d
    params = {k: torch.randn(3, *p.shape, requires_grad=True) for k, p in conv.named_parameters()}
    x = torch.randn(3, 2, 4, 5, 7, requires_grad=True)

    def gradients(module):
        def one(p, xb):
            return (functional_call(module, p, (xb,)) ** 2).sum()
        return torch.autograd.grad(vmap(one)(params, x).sum(), [x, *params.values()])

    (gx, *gp), (wx, *wp) = gradients(client), gradients(conv)
    assert torch.allclose(gx, wx, atol=1e-4)
    for k, a, b in zip(params, gp, wp):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), k


def test_torch_func_grad_cannot_differentiate_them():
    """Why the executor differentiates with torch.autograd.grad: a custom operator's autograd formula
    is not a functorch transform (pytorch/pytorch#168393). If this starts passing, torch.func.grad
    works with them too."""
    x, weight = torch.randn(1, 1, 3, 3, 2), torch.randn(1, 3, 3, 2, 2)
    with pytest.raises(RuntimeError, match="setup_context"):
        grad(lambda w: client_conv3x3(x, w).sum())(weight)


def test_only_3x3_stride_1_padding_1_convolutions_become_client_convolutions():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, stride=2, padding=1),
                                torch.nn.Conv2d(4, 4, 5, padding=2), torch.nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert [type(m).__name__ for m in client_convolutions(model)] == ["ClientConv2d", "AutocastConv2d",
                                                                      "AutocastConv2d", "AutocastConv2d"]


def test_autocast_misses_a_vmapped_convolution_which_autocast_conv2d_casts_itself():
    """Under vmap with per-client weights, bfloat16 autocast leaves nn.Conv2d in float32 (if torch
    starts casting it, AutocastConv2d can go); AutocastConv2d returns bfloat16 within bfloat16's
    rounding of the float32 result."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    cast = autocast_convolutions(torch.nn.Sequential(conv))[0]
    assert type(cast) is AutocastConv2d and type(conv) is torch.nn.Conv2d
    params = {k: torch.randn(3, *p.shape) for k, p in conv.named_parameters()}
    x = torch.randn(3, 2, 4, 5, 7)

    def clients(module):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return vmap(lambda p, xb: functional_call(module, p, (xb,)))(params, x)
    plain, low = clients(conv), clients(cast)
    assert plain.dtype == torch.float32 and low.dtype == torch.bfloat16
    assert ((low.float() - plain).norm() / plain.norm()).item() < 1e-2
