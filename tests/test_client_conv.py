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

from pytest_flopynet.fl.client_conv import ClientConv2d, client_conv3x3, client_convolutions


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (the test extra has it)")
def test_the_triton_kernels_equal_grouped_convolutions():
    """In a subprocess with TRITON_INTERPRET=1 (Triton reads it when the kernels are defined):
    odd sizes that leave partial tiles, in-channels below, at and above a block, one to three
    clients. Both sides in float32; the kernels accumulate in another order, hence 1e-4."""
    script = textwrap.dedent("""
        import torch
        from pytest_flopynet.fl import client_conv_triton as kernels
        from pytest_flopynet.fl.client_conv import _conv_reference, _weight_grad_reference
        torch.manual_seed(0)
        for clients, n, h, w, c, o in [(2, 3, 5, 7, 3, 8), (3, 2, 4, 4, 20, 70), (1, 1, 3, 2, 33, 130), (2, 2, 6, 6, 16, 64)]:
            x, weight = torch.randn(clients, n, h, w, c), torch.randn(clients, 3, 3, c, o)
            g = torch.randn(clients, n, h, w, o)
            for name, got, want in [("conv", kernels.conv(x, weight), _conv_reference(x, weight)),
                                    ("weight_grad", kernels.weight_grad(x, g), _weight_grad_reference(x, g))]:
                assert got.shape == want.shape, (name, got.shape, want.shape)
                error = ((got - want).norm() / want.norm()).item()
                assert error < 1e-4, (name, clients, n, h, w, c, o, error)
        print("kernels agree")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "kernels agree" in run.stdout


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (the test extra has it)")
def test_autotuning_tries_only_blocks_a_layer_can_fill():
    """The seed's first layer (3 in-channels, 64 out) and its last (128 in, 256 out): a K block above
    the in-channels (rounded up to a power of two, at least 16) or an N block above the out-channels
    is never benchmarked."""
    from pytest_flopynet.fl.client_conv_triton import _conv, _weight_grad
    for kernel, k_block, n_block in [(_conv, "BLOCK_K", "BLOCK_N"), (_weight_grad, "BLOCK_C", "BLOCK_N")]:
        prune = kernel.early_config_prune
        first = prune(kernel.configs, {"M": 32 * 32 * 32, "C": 3, "O": 64})
        assert first and all(c.kwargs[k_block] == 16 and c.kwargs[n_block] <= 64 for c in first)
        last = prune(kernel.configs, {"M": 32 * 8 * 8, "C": 128, "O": 256})
        assert last == kernel.configs  # every block fits
        assert len({c.kwargs[k_block] for c in kernel.configs}) >= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the compiled Triton kernels run on a GPU only")
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_the_autotuned_kernels_on_a_gpu_equal_grouped_convolutions(dtype, tolerance):
    """The seed's three layers (3->64 at 32x32, 64->128 at 16x16, 128->256 at 8x8; 5 clients of 4
    images), each kernel autotuned: the forward pass, the input gradient (the forward kernel on the
    flipped, transposed weights) and the weight gradient against cuDNN's grouped convolutions in
    float32 (TF32 off). bfloat16 inputs keep 8 bits of mantissa, hence 2e-2."""
    from pytest_flopynet.fl import client_conv_triton as kernels
    from pytest_flopynet.fl.client_conv import _conv_reference, _weight_grad_reference
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.manual_seed(0)
        for c, o, size in [(3, 64, 32), (64, 128, 16), (128, 256, 8)]:
            x = torch.randn(5, 4, size, size, c, device="cuda")
            weight, g = torch.randn(5, 3, 3, c, o, device="cuda"), torch.randn(5, 4, size, size, o, device="cuda")
            flipped = weight.flip(1, 2).transpose(3, 4).contiguous()
            low = [t.to(dtype) for t in (x, weight, g, flipped)]
            exact = [t.to(dtype).float() for t in (x, weight, g, flipped)]  # the same rounded inputs
            for name, got, want in [
                    ("conv", kernels.conv(low[0], low[1]), _conv_reference(exact[0], exact[1])),
                    ("input grad", kernels.conv(low[2], low[3]), _conv_reference(exact[2], exact[3])),
                    ("weight grad", kernels.weight_grad(low[0], low[2]), _weight_grad_reference(exact[0], exact[2]))]:
                assert got.dtype == dtype and got.shape == want.shape, name
                error = ((got.float() - want).norm() / want.norm()).item()
                assert error < tolerance, (name, c, o, error)
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
    assert [type(m).__name__ for m in client_convolutions(model)] == ["ClientConv2d", "Conv2d", "Conv2d", "Conv2d"]
