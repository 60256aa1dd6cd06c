"""The FL pieces against values worked out by hand."""
import re

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from pytest_flopynet.errors import FlopynetError
from pytest_flopynet.fl.aggregation import aggregate, fedavg
from pytest_flopynet.fl.cluster import FLCluster
from pytest_flopynet.fl.executors import LocalTask
from pytest_flopynet.fl.models import build_model, forward_flops
from pytest_flopynet.fl.partition import iid


def test_fedavg_is_the_sample_weighted_mean():
    updates = [torch.tensor([1.0, 10.0]), torch.tensor([3.0, 20.0]), torch.tensor([7.0, 40.0])]
    # weights 1:1:2 -> (1 + 3 + 2*7) / 4 = 4.5 and (10 + 20 + 80) / 4 = 27.5
    assert torch.allclose(fedavg(updates, [10, 10, 20]), torch.tensor([4.5, 27.5]))
    assert torch.allclose(aggregate("fedavg", updates, [1, 1, 2]), torch.tensor([4.5, 27.5]))


def test_the_rules_are_one_plain_function_of_the_fl_package():
    """Issue 3 names it pytest_flopynet.fl.aggregate(method, updates, weights, **parameters)."""
    import pytest_flopynet.fl as fl
    updates = [torch.tensor([1.0, 5.0]), torch.tensor([2.0, -4.0]), torch.tensor([9.0, 6.0])]
    assert fl.aggregate is aggregate
    assert torch.equal(fl.aggregate("median", updates, [1, 1, 1]), torch.tensor([2.0, 5.0]))


def test_executors_by_name_and_their_clear_errors(tiny_config):
    """The names --flopynet-executor takes; batched ones refuse BatchNorm models (vmap cannot update
    running statistics) where auto falls back to the sequential executor."""
    from torch import nn

    from pytest_flopynet.fl.executors import AutoExecutor, BatchedExecutor, SequentialExecutor, make_executor
    settings = dict(local_epochs=1, batch_size=8, learning_rate=0.1)
    mlp = build_model("mlp", {"hidden_layers": [8]}, (64,), 10)
    made = {kind: make_executor(kind, mlp, **settings) for kind in ("auto", "sequential", "batched", "compiled")}
    assert [type(e) for e in made.values()] == [AutoExecutor, SequentialExecutor, BatchedExecutor, BatchedExecutor]
    assert (made["batched"].compile, made["compiled"].compile, made["compiled"].client_multiple) == (False, True, None)
    with pytest.raises(FlopynetError, match="executor 'fast' is not one of auto, sequential, batched, compiled"):
        make_executor("fast", mlp, **settings)
    normed = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert make_executor("auto", normed, **settings).batched is None
    cnn = build_model("cnn", {"hidden_layers": [4], "input_channels": 3}, (3, 8, 8), 10)
    # 3x3 convolutions as client kernels where they were measured faster: compiled, on CUDA (building
    # the executor touches no device, so this runs without one)
    kinds = {(kind, device): make_executor(kind, cnn, device=device, **settings).convolutions
             for kind in ("batched", "compiled") for device in ("cpu", "cuda")}
    assert kinds == {("batched", "cpu"): "grouped", ("batched", "cuda"): "grouped",
                     ("compiled", "cpu"): "grouped", ("compiled", "cuda"): "client_kernel"}
    with pytest.raises(FlopynetError, match="executor 'compiled' cannot train Sequential: its BatchNorm layers"):
        make_executor("compiled", normed, **settings)
    assert isinstance(FLCluster(tiny_config(), seed=1, executor="sequential").executor, SequentialExecutor)


def test_forward_cost_counts_flops_and_layer_calls():
    from pytest_flopynet.fl.models import forward_cost
    # mlp [64] on 64 features: 2 x 64 x 64 + 2 x 64 x 10 multiply-adds x 2, two linear layers
    assert forward_cost(build_model("mlp", {"hidden_layers": [64]}, (64,), 10), (64,)) == (9472, 2)
    # lstm, 5 steps of 3 features, hidden 16: the cell's Linear(3 + 16 -> 4 x 16) once per step
    # (2 x 19 x 64 = 2432 each), then the head Linear(16 -> 10) (320): 6 calls
    assert forward_cost(build_model("lstm", {"hidden_size": 16}, (5, 3), 10), (5, 3)) == (5 * 2432 + 320, 6)
    # cnn [4] on 1x8x8: 3x3 convolution to 4 channels (2 x 9 x 4 x 64 = 4608), pooled to 4x4, then
    # Linear(64 -> 10) (1280)
    assert forward_cost(build_model("cnn", {"hidden_layers": [4]}, (1, 8, 8), 10), (1, 8, 8)) == (4608 + 1280, 2)


def test_auto_batches_on_a_cpu_only_where_it_pays():
    """From 3 clients, for light layers: the digits MLP (4.7 kFLOP per layer call) batches, the CNN
    [16, 32] on 3x32x32 images (conv 885 k, conv 2.36 M, linear 41 kFLOP: 1.09 M per call) does not."""
    from pytest_flopynet.fl.executors import AutoExecutor

    def tasks(n, shape):
        return [LocalTask(f"c{i}", torch.zeros(8, *shape), torch.zeros(8, dtype=torch.long), i) for i in range(n)]
    settings = dict(local_epochs=1, batch_size=4, learning_rate=0.1)
    mlp = AutoExecutor(build_model("mlp", {"hidden_layers": [64]}, (64,), 10), device="cpu", **settings)
    assert [mlp.batches(tasks(n, (64,))) for n in (1, 2, 3, 10)] == [False, False, True, True]
    cnn = AutoExecutor(build_model("cnn", {"hidden_layers": [16, 32]}, (3, 32, 32), 10), device="cpu", **settings)
    assert not cnn.batches(tasks(10, (3, 32, 32)))
    g = parameters_to_vector(mlp.model.parameters()).detach()
    assert [u.steps for u in mlp.train(g, tasks(3, (64,)))] == [2, 2, 2]


def test_group_sizes_step_by_a_quarter_of_a_power_of_two():
    from pytest_flopynet.fl.executors import group_size
    # multiples of max(1, 2^floor(log2 n) / 4): 1 up to 7 clients, 2 for 8-15, 4 for 16-31, 16 for 64-127
    assert [group_size(n, None) for n in (1, 3, 7, 8, 9, 10, 15, 17, 31, 64, 65, 100, 127)] == \
        [1, 3, 7, 8, 10, 10, 16, 20, 32, 64, 80, 112, 128]
    assert [group_size(n, 8) for n in (1, 8, 9, 100)] == [8, 8, 16, 104]
    assert group_size(5, 1) == 5
    assert max(group_size(n, None) / n for n in range(1, 1000)) < 1.25  # never a quarter idle


def test_an_unknown_or_stateful_rule_is_a_clear_error():
    with pytest.raises(FlopynetError, match="unknown method 'fedsgd'"):
        aggregate("fedsgd", [torch.zeros(2)], [1])
    with pytest.raises(FlopynetError, match=r"fedadam keeps server state between rounds: use make_aggregator"):
        aggregate("fedadam", [torch.zeros(2)], [1])


def test_iid_honours_every_client_size_and_keeps_clients_disjoint_while_the_pool_lasts():
    labels = np.zeros(100)
    parts = iid(labels, [30, 50, 20], np.random.default_rng(0))
    assert [len(p) for p in parts] == [30, 50, 20]
    assert len(np.unique(np.concatenate(parts))) == 100


def test_iid_reuses_the_pool_across_clients_but_never_within_one():
    parts = iid(np.zeros(100), [60, 60, 60], np.random.default_rng(1))
    assert [len(np.unique(p)) for p in parts] == [60, 60, 60]


def test_model_parameters_are_checked():
    with pytest.raises(FlopynetError, match=r"model_parameters: depth not accepted by model 'mlp' "
                                            r"\(accepted: hidden_layers, num_classes\)"):
        build_model("mlp", {"depth": 3}, (8, 8), 10)
    for bad in ("abc", 64, [0], [32, -3], [], [True]):
        with pytest.raises(FlopynetError, match=r"model_parameters.hidden_layers: mlp needs a non-empty list of "
                                                r"positive integers, got " + re.escape(repr(bad))):
            build_model("mlp", {"hidden_layers": bad}, (8, 8), 10)
    with pytest.raises(FlopynetError, match="num_classes: 5 but the data set has 10 classes"):
        build_model("mlp", {"num_classes": 5}, (8, 8), 10)
    with pytest.raises(FlopynetError, match="unknown model 'transformer'"):
        build_model("transformer", {}, (8, 8), 10)


def test_forward_flops_counts_the_matrix_products():
    model = build_model("mlp", {"hidden_layers": [256]}, (8, 8), 10)
    assert forward_flops(model, (8, 8)) == 2 * (64 * 256 + 256 * 10)


def test_cluster_sizes_bytes_and_data(tiny_config):
    config = tiny_config(fl={"model_architecture": "mlp", "model_parameters": {"hidden_layers": [32]},
                             "client_data_sizes": [40, 70, 90]})
    cluster = FLCluster(config, seed=3)
    # 64*32 + 32 weights and biases, then 32*10 + 10, float32
    assert cluster.model_bytes == 4 * (64 * 32 + 32 + 32 * 10 + 10)
    assert [len(c.indices) for c in cluster.clients.values()] == [40, 70, 90]
    assert [c.samples for c in cluster.clients.values()] == [40, 70, 90]
    assert len(cluster.data.y_test) == 360  # 20% of 1797, held out
    assert cluster.compute_seconds("client_2") == pytest.approx(70 * 3 * 2 * (64 * 32 + 32 * 10) / 2e10)


def test_selection_is_seeded_and_draws_only_candidates(tiny_config):
    cluster = FLCluster(tiny_config(fl={"client_data_sizes": [20] * 8}), seed=5)
    picks = [cluster.select(["client_2", "client_4", "client_5", "client_7"], 2, r) for r in range(1, 30)]
    assert all(len(p) == 2 and set(p) <= {"client_2", "client_4", "client_5", "client_7"} for p in picks)
    assert len({tuple(p) for p in picks}) > 1
    again = FLCluster(tiny_config(fl={"client_data_sizes": [20] * 8}), seed=5)
    assert picks[0] == again.select(["client_2", "client_4", "client_5", "client_7"], 2, 1)
