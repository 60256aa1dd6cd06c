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


def test_the_reference_operator_is_the_per_client_convolution():
    """client_conv3x3 off CUDA, checked against each client's own F.conv2d (NCHW)."""
    torch.manual_seed(0)
    x, weight = torch.randn(3, 2, 5, 6, 4), torch.randn(3, 3, 3, 4, 7)
    out = client_conv3x3(x, weight)
    for k in range(3):
        want = torch.nn.functional.conv2d(x[k].permute(0, 3, 1, 2), weight[k].permute(3, 2, 0, 1), padding=1)
        assert torch.allclose(out[k], want.permute(0, 2, 3, 1), atol=1e-5)


def test_a_client_convolution_and_its_gradients_equal_conv2d_under_vmap():
    """Three clients' own weights under torch.func.grad(vmap(...)), as the batched executor uses it:
    the input, weight and bias gradients equal those of nn.Conv2d client by client."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    client = client_convolutions(torch.nn.Sequential(conv))[0]
    assert type(client) is ClientConv2d
    params = {k: torch.randn(3, *p.shape) for k, p in conv.named_parameters()}
    x = torch.randn(3, 2, 4, 5, 7)

    def loss(module):
        def one(p, xb):
            return (functional_call(module, p, (xb,)) ** 2).sum()
        return lambda p, xb: vmap(one)(p, xb).sum()

    (gp, gx), (wp, wx) = (grad(loss(m), argnums=(0, 1))(params, x) for m in (client, conv))
    assert torch.allclose(gx, wx, atol=1e-4)
    for k in params:
        assert torch.allclose(gp[k], wp[k], rtol=1e-4, atol=1e-4), k


def test_only_3x3_stride_1_padding_1_convolutions_become_client_convolutions():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, stride=2, padding=1),
                                torch.nn.Conv2d(4, 4, 5, padding=2), torch.nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert [type(m).__name__ for m in client_convolutions(model)] == ["ClientConv2d", "Conv2d", "Conv2d", "Conv2d"]
