"""The FL engine trains for real: accuracy under attacks and stragglers, and the batched executor
agreeing with the sequential one. Loops over FLCluster directly (no network) to stay quick."""
from dataclasses import replace

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from pytest_flopynet.fl.attacks import Tamper
from pytest_flopynet.fl.cluster import FLCluster, train_rounds
from pytest_flopynet.fl.client_conv import ClientConv2d
from pytest_flopynet.fl.client_conv import MatmulConv2d, matmul_convolutions
from pytest_flopynet.fl.executors import BatchedExecutor, LocalTask, SequentialExecutor
from pytest_flopynet.fl.models import build_model


@pytest.fixture(autouse=True)
def one_thread():
    """These models are small: a second intra-op thread only adds synchronisation, and spinning
    OpenMP threads slow down badly when other processes share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cluster(tiny_config, n, **fl):
    fl.setdefault("client_data_sizes", [140] * n)
    fl.setdefault("clients_per_round", n)
    return FLCluster(tiny_config(fl=fl, net={"node_count": n + 1}), seed=1)


def test_fedavg_mlp_on_iid_digits_reaches_0_93_within_30_rounds(tiny_config):
    cl = cluster(tiny_config, 10, model_architecture="mlp", model_parameters={"hidden_layers": [64]}, local_epochs=5,
                 learning_rate=0.1, client_data_sizes=[143] * 10)
    accuracies = train_rounds(cl, 30)
    assert max(accuracies) >= 0.93 and accuracies[-1] >= 0.93


ROBUST = [("krum", {"f": 3}, 10), ("multikrum", {"f": 3}, 10), ("median", {}, 10),
          ("trimmed_mean", {"beta": 0.3}, 10), ("bulyan", {"f": 3}, 15)]  # bulyan needs n >= 4f + 3 = 15


@pytest.mark.parametrize("method, parameters, n", [("fedavg", {}, 10), *ROBUST])
def test_three_noisy_clients_break_fedavg_but_not_the_robust_rules(tiny_config, method, parameters, n):
    cl = cluster(tiny_config, n, model_architecture="logreg", local_epochs=2, learning_rate=0.1,
                 aggregation_method=method, aggregation_parameters=parameters)
    for name in ["client_1", "client_2", "client_3"]:
        cl.add_tamper(name, Tamper("gaussian_noise", {"noise_std": 10}))
    final = train_rounds(cl, 20)[-1]
    if method == "fedavg":
        assert final < 0.5
    else:
        assert final >= 0.85


def test_fedprox_keeps_stragglers_partial_work_and_ends_ahead_of_fedavg(tiny_config):
    """FedProx paper, synthetic(1, 1), 90% stragglers: FedAvg drops them, FedProx (mu = 1) aggregates
    what they did (here 20 rounds of 10 epochs on 30 clients of 50..340 samples, 10 per round)."""
    results = {}
    for method, parameters in [("fedavg", {}), ("fedprox", {"mu": 1.0})]:
        cl = cluster(tiny_config, 30, model_architecture="logreg", dataset="synthetic_alpha_beta(1, 1)",
                     client_data_sizes=[50 + 10 * i for i in range(30)], clients_per_round=10, local_epochs=10,
                     batch_size=10, learning_rate=0.01, aggregation_method=method, aggregation_parameters=parameters)
        results[method] = train_rounds(cl, 20, stragglers=0.9)[-1]
    assert results["fedprox"] > results["fedavg"] + 0.1


def test_partial_work_takes_that_share_of_the_local_steps(tiny_config):
    cl = cluster(tiny_config, 3, client_data_sizes=[100, 64, 10], local_epochs=3, batch_size=32)
    assert [cl.local_steps(c) for c in cl.clients] == [12, 6, 3]  # 3 epochs x ceil(n / 32)
    updates = cl.train(list(cl.clients), 1, {"client_1": 0.5, "client_3": 0.1})
    assert [u.steps for u in updates] == [6, 6, 1]  # at least one step


def test_scaffold_control_variates_follow_option_two(tiny_config):
    cl = cluster(tiny_config, 3, local_epochs=1, batch_size=50, learning_rate=0.2, aggregation_method="scaffold",
                 client_data_sizes=[100, 100, 100])
    x = cl.global_params.clone()
    updates = cl.train(list(cl.clients), 1)
    cl.aggregate(updates)
    # c_i = (x - y_i) / (K lr) with K = 2 steps; all three clients took part, so c = mean(c_i)
    for u in updates:
        assert torch.allclose(cl.control_variates[u.client], (x - u.params) / (2 * 0.2))
    assert torch.allclose(cl.server_state["c"], torch.stack(list(cl.control_variates.values())).mean(0), atol=1e-6)
    assert torch.allclose(cl.global_params, torch.stack([u.params for u in updates]).mean(0), atol=1e-6)


def executor_case(architecture, parameters, shape, mu):
    """A model, its flat parameters and five clients: unequal sizes, a partial-work client and SCAFFOLD
    corrections on every other client."""
    torch.manual_seed(0)
    model = build_model(architecture, parameters, shape, 10)
    g = parameters_to_vector(model.parameters()).detach().clone()
    gen = torch.Generator().manual_seed(1)
    tasks = [LocalTask(f"c{i}", torch.randn(n, *shape, generator=gen), torch.randint(0, 10, (n,), generator=gen), i,
                       max_steps=steps, correction=0.01 * torch.randn(g.shape, generator=gen) if i % 2 else None)
             for i, (n, steps) in enumerate([(50, None), (37, None), (64, 3), (20, None), (5, None)])]
    return model, g, tasks, dict(local_epochs=2, batch_size=8, learning_rate=0.1, mu=mu)


def assert_same_updates(sequential, batched, g, tolerance=1e-5):
    for s, b in zip(sequential, batched, strict=True):
        assert (s.client, s.steps, s.num_samples) == (b.client, b.steps, b.num_samples)
        assert ((s.params - b.params).norm() / (s.params - g).norm()).item() < tolerance
        assert b.train_loss == pytest.approx(s.train_loss, rel=tolerance)


@pytest.mark.parametrize("architecture, parameters, shape", [
    ("mlp", {"hidden_layers": [32, 16]}, (8, 8)),
    ("cnn", {"hidden_layers": [8, 16]}, (3, 16, 16)),
    ("lstm", {"hidden_size": 16, "num_layers": 2}, (12, 5)),
])
@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_the_batched_executor_equals_the_sequential_one(architecture, parameters, shape, mu):
    """Same seeds, same batches: unequal client sizes, a partial-work client and SCAFFOLD corrections
    included. Relative error of each client's update within 1e-5 on float32."""
    model, g, tasks, settings = executor_case(architecture, parameters, shape, mu)
    sequential = SequentialExecutor(model, **settings).train(g, tasks)
    assert_same_updates(sequential, BatchedExecutor(model, device="cpu", **settings).train(g, tasks), g)


@pytest.mark.parametrize("architecture, parameters, shape", [
    ("cnn", {"hidden_layers": [8, 16]}, (3, 16, 16)),
    ("lstm", {"hidden_size": 16, "num_layers": 2}, (12, 5)),
])
def test_clients_trained_on_several_threads_give_byte_identical_updates(architecture, parameters, shape):
    """--threads N trains N clients at once, each on one torch thread: every update is bit for bit the
    one-at-a-time update, in task order, for any N (here 1, 2 and more workers than clients)."""
    model, g, tasks, settings = executor_case(architecture, parameters, shape, 0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as pytest and flopynet run train
    try:
        one = SequentialExecutor(model, **settings).train(g, tasks)
    finally:
        torch.set_num_threads(threads)
    for workers in (2, 8):  # whatever the caller's torch threads: the executor keeps one while it trains
        executor = SequentialExecutor(model, **settings)
        executor.workers = workers
        many = executor.train(g, tasks)
        assert [u.client for u in many] == [u.client for u in one]
        for a, b in zip(one, many):
            assert torch.equal(a.params, b.params) and (a.train_loss, a.steps) == (b.train_loss, b.steps)


def test_idle_clients_that_pad_a_group_change_nothing():
    """client_multiple=8 pads each group to 8 clients; the idle ones have no samples and no steps,
    so the five real clients' updates stay those of the sequential run."""
    model, g, tasks, settings = executor_case("cnn", {"hidden_layers": [8, 16]}, (3, 16, 16), 0.5)
    batched = BatchedExecutor(model, device="cpu", client_multiple=8, **settings)
    assert_same_updates(SequentialExecutor(model, **settings).train(g, tasks), batched.train(g, tasks), g)
    assert [key[0] for key in batched._steps] == [8, 8]  # all three step-count buckets ran as groups of 8


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # Inductor's imports
def test_the_compiled_step_equals_the_sequential_one():
    """torch.compile (Inductor) of the vmapped step, here its C++ backend: same updates."""
    model, g, tasks, settings = executor_case("mlp", {"hidden_layers": [32, 16]}, (8, 8), 0.5)
    batched = BatchedExecutor(model, device="cpu", compile=True, **settings)
    assert not batched.cuda_graphs
    assert_same_updates(SequentialExecutor(model, **settings).train(g, tasks), batched.train(g, tasks), g)


@pytest.mark.parametrize("settings", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1, bias=False),
                                      dict(kernel_size=(3, 5), dilation=2, padding=(2, 1)), dict(kernel_size=1),
                                      dict(kernel_size=3, padding=1, padding_mode="reflect")])
def test_a_convolution_as_matmul_equals_the_convolution(settings):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, **settings)
    x = torch.randn(2, 4, 9, 11)
    matmul = matmul_convolutions(torch.nn.Sequential(conv))[0]
    assert type(matmul) is MatmulConv2d
    assert torch.allclose(matmul(x), conv(x), atol=1e-5)


@pytest.mark.parametrize("convolutions, kind", [("matmul", MatmulConv2d), ("client_kernel", ClientConv2d)])
def test_the_batched_executor_with_other_convolutions_equals_the_sequential_one(convolutions, kind):
    model, g, tasks, settings = executor_case("cnn", {"hidden_layers": [8, 16]}, (3, 16, 16), 0.5)
    batched = BatchedExecutor(model, device="cpu", convolutions=convolutions, **settings)
    assert_same_updates(SequentialExecutor(model, **settings).train(g, tasks), batched.train(g, tasks), g)
    assert not any(type(m) is kind for m in model.modules())  # the executor trains a copy
    assert sum(type(m) is kind for m in batched.step_model.modules()) == 2  # both convolutions


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # Inductor's imports
def test_the_compiled_step_with_client_kernel_convolutions_equals_the_sequential_one(monkeypatch):
    """The compiled step keeps the client convolutions' own gradients: the weight-gradient operator
    runs (on the CPU its grouped-convolution reference) and the updates are the sequential ones."""
    from pytest_flopynet.fl import client_conv
    calls = []
    reference = client_conv._weight_grad_reference
    monkeypatch.setattr(client_conv, "_weight_grad_reference", lambda *a: calls.append(1) or reference(*a))
    model, g, tasks, settings = executor_case("cnn", {"hidden_layers": [8, 16]}, (3, 16, 16), 0.5)
    batched = BatchedExecutor(model, device="cpu", compile=True, convolutions="client_kernel", **settings)
    assert_same_updates(SequentialExecutor(model, **settings).train(g, tasks), batched.train(g, tasks), g)
    # 14, 10, 3, 6 and 2 steps (2 epochs of batches of 8) run as buckets of 14, 6 and 3 steps, each
    # step differentiating both convolutions
    assert len(calls) == 2 * (14 + 6 + 3)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))], ids=["cpu", "gpu"])
@pytest.mark.parametrize("convolutions", ["grouped", "matmul", "client_kernel"])
def test_under_mixed_precision_every_convolution_computes_in_bfloat16(convolutions, device):
    """bfloat16 autocast, hooks on the step model's convolutions: each returns bfloat16 (under vmap
    autocast alone leaves them in float32 on the CPU)."""
    model, g, tasks, settings = executor_case("cnn", {"hidden_layers": [8, 16]}, (3, 16, 16), 0.0)
    batched = BatchedExecutor(model, device=device, mixed_precision=True, convolutions=convolutions, **settings)
    dtypes = []
    for module in batched.step_model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    batched.train(g, tasks[:2])
    assert len(dtypes) >= 2 and set(dtypes) == {torch.bfloat16}


def test_an_unknown_convolution_kind_is_refused():
    with pytest.raises(ValueError, match="convolutions must be one of grouped, matmul, client_kernel, not 'fft'"):
        BatchedExecutor(build_model("mlp", {}, (8, 8), 10), device="cpu", convolutions="fft", local_epochs=1,
                        batch_size=8, learning_rate=0.1)


def test_cuda_graphs_need_a_cuda_device():
    model = build_model("mlp", {}, (8, 8), 10)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, the executor runs on cpu"):
        BatchedExecutor(model, device="cpu", cuda_graphs=True, local_epochs=1, batch_size=8, learning_rate=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA graph replay runs on a GPU only")
@pytest.mark.parametrize("options", [{}, {"compile": True, "convolutions": "grouped"}, {"convolutions": "matmul"},
                                     {"convolutions": "client_kernel"}, {"convolutions": "client_kernel", "compile": True}],
                         ids=["graph", "compiled-graph", "matmul-graph", "client-kernel-graph",
                              "client-kernel-compiled-graph"])
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_the_cuda_graph_replay_equals_the_sequential_one(options):
    """On the GPU, in float32 (no bfloat16): replayed graphs give the sequential executor's updates.
    TF32 is off so both sides do float32 arithmetic; cuDNN sums grouped and plain convolutions in
    different orders, hence 1e-4 (a replay that went wrong is off by far more)."""
    model, g, tasks, settings = executor_case("cnn", {"hidden_layers": [8, 16]}, (3, 16, 16), 0.5)
    cuda = torch.device("cuda")
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        sequential = SequentialExecutor(model.to(cuda), **settings).train(g.to(cuda), [
            LocalTask(t.client, t.x.to(cuda), t.y.to(cuda), t.seed, t.max_steps,
                      None if t.correction is None else t.correction.to(cuda)) for t in tasks])
        batched = BatchedExecutor(model, device=cuda, mixed_precision=False, **options, **settings)
        updates = batched.train(g, tasks)
        # one per group shape: step-count buckets of 2 clients (corrected), 1 (corrected), 2 (not)
        steps = list(batched._steps.values())
        assert batched.cuda_graphs and len(steps) == 3 and all(step.graph is not None for step in steps)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert_same_updates([replace(u, params=u.params.cpu()) for u in sequential], updates, g, 1e-4)
