"""Aggregators, splits, models and data loaders of the FL engine, against values worked out by hand."""
import gzip
import math
import pickle

import numpy as np
import pytest
import torch

from pytest_flopynet.errors import FlopynetError, UnavailableError
from pytest_flopynet.fl.aggregation import (aggregate, bulyan, krum, make_aggregator, median, multikrum,
                                            trimmed_mean)
from pytest_flopynet.fl.datasets import load_dataset, parse_name
from pytest_flopynet.fl.executors import LocalTask, SequentialExecutor
from pytest_flopynet.fl.models import build_model
from pytest_flopynet.fl.partition import dirichlet, shards


def vectors(*values):
    """Two-coordinate updates [v, 10 v]: distances scale uniformly, so picks are those of the scalars."""
    return [torch.tensor([float(v), 10.0 * v]) for v in values]


# -- stateless rules -------------------------------------------------------------------------------

def test_median_is_coordinate_wise_and_averages_the_middle_pair():
    updates = [torch.tensor([0.0, 10.0]), torch.tensor([1.0, 20.0]), torch.tensor([2.0, 30.0]),
               torch.tensor([3.0, 40.0]), torch.tensor([100.0, -50.0])]
    # x: 0 1 [2] 3 100 and y: -50 10 [20] 30 40
    assert torch.equal(median(updates), torch.tensor([2.0, 20.0]))
    # without the fourth: x 0 1 2 100 -> (1 + 2) / 2, y -50 10 20 30 -> (10 + 20) / 2
    assert torch.equal(aggregate("median", updates[:3] + updates[4:], [1] * 4), torch.tensor([1.5, 15.0]))


def test_trimmed_mean_drops_beta_n_from_each_end_per_coordinate():
    updates = [torch.tensor([0.0, 10.0]), torch.tensor([1.0, 20.0]), torch.tensor([2.0, 30.0]),
               torch.tensor([3.0, 40.0]), torch.tensor([100.0, -50.0])]
    # beta 0.2 of 5 -> one each end: x mean(1, 2, 3) = 2, y mean(10, 20, 30) = 20
    assert torch.equal(trimmed_mean(updates, beta=0.2), torch.tensor([2.0, 20.0]))
    # beta 0.1 of 5 trims nothing: the plain mean (106 / 5, 50 / 5)
    assert torch.allclose(aggregate("trimmed_mean", updates, [1] * 5, beta=0.1), torch.tensor([21.2, 10.0]))


def test_krum_picks_the_update_closest_to_its_n_minus_f_minus_2_neighbours():
    # values 0 1 2 4 100, f = 1: two neighbours each. Scores (squared distances, scaled by 101):
    # 0: 1 + 4 = 5; 1: 1 + 1 = 2; 2: 1 + 4 = 5; 4: 4 + 9 = 13; 100: 96^2 + 98^2
    updates = vectors(0, 1, 2, 4, 100)
    assert torch.equal(krum(updates, f=1), torch.tensor([1.0, 10.0]))
    # multikrum m = 3: scores 2, 5, 5 -> mean(1, 0, 2) = 1; m defaults to n - f = 4: + 4 -> 7 / 4
    assert torch.allclose(multikrum(updates, f=1, m=3), torch.tensor([1.0, 10.0]))
    assert torch.allclose(aggregate("multikrum", updates, [1] * 5, f=1), torch.tensor([1.75, 17.5]))


def test_bulyan_selects_by_repeated_krum_then_averages_around_the_median():
    # n = 7, f = 1: theta = 5 picks, beta = 3. Krum rounds (neighbours 4, 3, 2, 1, 1):
    # {0 1 3 4 7 50 -60} -> 3 (score 30); {0 1 4 7 50 -60} -> 4 (34); {0 1 7 50 -60} -> 1 (37);
    # {0 7 50 -60} -> 0 (49, tied with 7, first wins); {7 50 -60} -> 7 (43^2, tied with 50).
    # Picks 3 4 1 0 7: median 3; the three closest to it are 3 4 1 -> 8 / 3.
    updates = vectors(0, 1, 3, 4, 7, 50, -60)
    assert torch.allclose(bulyan(updates, f=1), torch.tensor([8 / 3, 80 / 3]))


def test_impossible_parameters_are_clear_errors():
    with pytest.raises(FlopynetError, match=r"krum needs n > 2f \+ 2 updates: n = 6, f = 2"):
        krum(vectors(*range(6)), f=2)
    with pytest.raises(FlopynetError, match=r"bulyan needs n >= 4f \+ 3 updates: n = 10, f = 2"):
        aggregate("bulyan", vectors(*range(10)), [1] * 10, f=2)
    with pytest.raises(FlopynetError, match="multikrum: m = 9 must be between 1 and the 5 updates"):
        multikrum(vectors(*range(5)), f=1, m=9)
    with pytest.raises(FlopynetError, match="trims every one of 2 updates"):
        trimmed_mean(vectors(1, 2), beta=0.5)


# -- stateful server rules ---------------------------------------------------------------------------

def test_fedavgm_keeps_momentum_across_rounds():
    agg, state = make_aggregator("fedavgm", {"server_lr": 1.0, "momentum": 0.9}), {}
    # round 1: delta = mean(2, 4) - 1 = 2, v = 2, x = 3; round 2: delta 0, v = 1.8, x = 4.8
    x = agg.aggregate(torch.tensor([1.0]), [torch.tensor([2.0]), torch.tensor([4.0])], [1, 1], state)
    assert torch.allclose(x, torch.tensor([3.0]))
    x = agg.aggregate(x, [torch.tensor([3.0])], [1], state)
    assert torch.allclose(x, torch.tensor([4.8]))


@pytest.mark.parametrize("method, v1", [
    ("fedadam", 0.99 * 1e-6 + 0.01 * 1.0),      # beta2 v0 + (1 - beta2) delta^2, v0 = tau^2
    ("fedyogi", 1e-6 + 0.01 * 1.0),             # v0 - (1 - beta2) delta^2 sign(v0 - delta^2)
])
def test_adaptive_server_optimisers_follow_reddi_et_al(method, v1):
    agg, state = make_aggregator(method, {"server_lr": 1.0, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}), {}
    x = agg.aggregate(torch.tensor([0.0]), [torch.tensor([1.0])], [1], state)  # delta = 1, m = 0.1
    assert x.item() == pytest.approx(0.1 / (math.sqrt(v1) + 1e-3), rel=1e-6)


def test_scaffold_server_step_moves_the_model_and_the_control_variate():
    agg = make_aggregator("scaffold", {"server_lr": 0.5})
    state = {"num_clients": 4, "client_deltas": {"client_1": torch.tensor([2.0]), "client_2": torch.tensor([4.0])}}
    x = agg.aggregate(torch.tensor([1.0]), [torch.tensor([3.0]), torch.tensor([5.0])], [1, 1], state)
    assert torch.allclose(x, torch.tensor([2.5]))  # 1 + 0.5 * (4 - 1)
    assert torch.allclose(state["c"], torch.tensor([1.5]))  # 0 + 2/4 * mean(2, 4)


def test_the_scaffold_correction_shifts_every_sgd_step_by_minus_lr_times_it():
    torch.manual_seed(0)
    model = build_model("logreg", {}, (4,), 3)
    g = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    correction = torch.linspace(-1, 1, len(g))
    ex = SequentialExecutor(model, local_epochs=1, batch_size=8, learning_rate=0.5)
    plain = ex.train(g, [LocalTask("a", x, y, 1)])[0].params
    corrected = ex.train(g, [LocalTask("a", x, y, 1, correction=correction)])[0].params
    assert torch.allclose(corrected - plain, -0.5 * correction, atol=1e-6)


# -- splits -------------------------------------------------------------------------------------------

def test_label_shards_give_each_client_two_whole_classes():
    labels = np.repeat(np.arange(10), 10)  # sorted, 100 samples: 10 shards of 20 / 2 = 10 are exactly the classes
    parts = shards(labels, [20] * 5, np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    for p in parts:
        values, counts = np.unique(labels[p], return_counts=True)
        assert len(values) == 2 and counts.tolist() == [10, 10]


def test_dirichlet_honours_sizes_and_a_small_alpha_concentrates_labels():
    labels = np.repeat(np.arange(10), 200)
    sizes = [37, 150, 90, 200, 55]
    skewed = dirichlet(labels, sizes, np.random.default_rng(1), alpha=0.001)
    even = dirichlet(labels, sizes, np.random.default_rng(1), alpha=1000.0)
    assert [len(p) for p in skewed] == sizes == [len(p) for p in even]
    assert all(len(np.unique(p)) == len(p) for p in skewed + even)
    assert all(np.bincount(labels[p]).max() / len(p) >= 0.9 for p in skewed)
    assert all(len(np.unique(labels[p])) == 10 for p in even[1:])


def test_a_shard_split_larger_than_the_pool_is_refused():
    with pytest.raises(FlopynetError, match="clients ask for 120 and the training pool has 100"):
        shards(np.zeros(100), [60, 60], np.random.default_rng(0))


# -- models -------------------------------------------------------------------------------------------

def count(model):
    return sum(p.numel() for p in model.parameters())


def test_cnn_is_conv_relu_pool_per_width_then_a_linear_classifier():
    model = build_model("cnn", {"hidden_layers": [4, 8], "input_channels": 3}, (3, 8, 8), 10)
    # conv 3->4: 3*4*9 + 4; conv 4->8: 4*8*9 + 8; 8x8 pooled twice = 2x2, linear 8*2*2*10 + 10
    assert count(model) == 112 + 296 + 330
    assert model(torch.zeros(5, 3, 8, 8)).shape == (5, 10)
    with pytest.raises(FlopynetError, match="input_channels: 1 but the data set's images have 3 channels"):
        build_model("cnn", {"input_channels": 1}, (3, 8, 8), 10)


def test_lstm_computes_what_torch_nn_lstm_computes():
    torch.manual_seed(0)
    model = build_model("lstm", {"input_size": 5, "hidden_size": 4, "num_layers": 2}, (7, 5), 3)
    ref = torch.nn.LSTM(5, 4, num_layers=2, batch_first=True)
    with torch.no_grad():
        for i, cell in enumerate(model.cells):  # torch's gates are [W_ih | W_hh] with two biases
            w_ih, w_hh = cell.weight[:, :cell.in_features - 4], cell.weight[:, cell.in_features - 4:]
            getattr(ref, f"weight_ih_l{i}").copy_(w_ih), getattr(ref, f"weight_hh_l{i}").copy_(w_hh)
            getattr(ref, f"bias_ih_l{i}").copy_(cell.bias), getattr(ref, f"bias_hh_l{i}").zero_()
    x = torch.randn(6, 7, 5)
    out, _ = ref(x)
    assert torch.allclose(model(x), model.head(out[:, -1]), atol=1e-6)
    with pytest.raises(FlopynetError, match="input_size: 9 but the data set's sequences have 5 features"):
        build_model("lstm", {"input_size": 9}, (7, 5), 3)


def test_resnet18_and_mobilenet_v2_are_the_cifar_variants(tmp_path):
    resnet = build_model("resnet18", {"pretrained": False}, (3, 32, 32), 10)
    assert count(resnet) == 11_173_962  # the CIFAR ResNet-18's count (GroupNorm has BatchNorm's affine parameters)
    mobilenet = build_model("mobilenet_v2", {}, (3, 32, 32), 10)
    assert mobilenet(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not list(resnet.buffers()) and not list(mobilenet.buffers())  # no running statistics
    with pytest.raises(FlopynetError, match="weights cannot be downloaded here; set model_parameters.weights_path"):
        build_model("resnet18", {"pretrained": True}, (3, 32, 32), 10)
    with pytest.raises(UnavailableError, match="no file at .*missing.pt"):
        build_model("resnet18", {"pretrained": True, "weights_path": str(tmp_path / "missing.pt")}, (3, 32, 32), 10)
    torch.save(mobilenet.state_dict(), tmp_path / "m.pt")
    loaded = build_model("mobilenet_v2", {"pretrained": True, "weights_path": str(tmp_path / "m.pt")}, (3, 32, 32), 10)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), mobilenet.parameters()))
    with pytest.raises(FlopynetError, match="does not fit mobilenet_v2"):
        build_model("mobilenet_v2", {"pretrained": True, "weights_path": str(tmp_path / "m.pt")}, (3, 32, 32), 100)


# -- data sets ----------------------------------------------------------------------------------------

def write_cifar(root, folder, files, label_key, classes):
    (root / folder).mkdir(parents=True)
    for i, name in enumerate(files):
        data = np.zeros((2, 3072), dtype=np.uint8)
        data[0, 0] = 255  # first image, red channel, top-left pixel
        batch = {b"data": data, label_key: [i % classes, (i + 1) % classes]}
        with open(root / folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar10_and_cifar100_load_from_their_python_batches(tmp_path):
    write_cifar(tmp_path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10)
    write_cifar(tmp_path, "cifar-100-python", ["train", "test"], b"fine_labels", 100)
    c10 = load_dataset("cifar10", 0, tmp_path)
    assert c10.x_train.shape == (10, 3, 32, 32) and c10.x_test.shape == (2, 3, 32, 32) and c10.num_classes == 10
    assert c10.y_train.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5] and c10.y_test.tolist() == [5, 6]
    assert c10.x_train[0, 0, 0, 0].item() == pytest.approx((1 - 0.4914) / 0.2470)
    assert c10.x_train[0, 1, 0, 0].item() == pytest.approx(-0.4822 / 0.2435)
    c100 = load_dataset("cifar100", 0, tmp_path)
    assert c100.num_classes == 100 and c100.y_train.tolist() == [0, 1] and c100.y_test.tolist() == [1, 2]


def write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def test_mnist_loads_from_idx_files_plain_or_gzipped(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    images = np.zeros((3, 28, 28))
    images[1, 5, 6] = 51
    write_idx(folder / "train-images-idx3-ubyte.gz", images, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", np.array([7, 2, 9]), gz=False)
    write_idx(folder / "t10k-images-idx3-ubyte", images[:2], gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([1, 0]), gz=True)
    data = load_dataset("mnist", 0, tmp_path)
    assert data.x_train.shape == (3, 1, 28, 28) and data.y_train.tolist() == [7, 2, 9] and data.y_test.tolist() == [1, 0]
    assert data.x_train[1, 0, 5, 6].item() == pytest.approx(0.2)


def test_a_missing_data_set_names_where_it_looked(tmp_path):
    with pytest.raises(UnavailableError, match=f"{tmp_path}/cifar-10-batches-py/data_batch_1"):
        load_dataset("cifar10", 0, tmp_path)
    with pytest.raises(UnavailableError, match=r"looked for .*MNIST/raw/train-images-idx3-ubyte"):
        load_dataset("mnist", 0, tmp_path)
    with pytest.raises(UnavailableError, match="none is set .*--flopynet-data-dir"):
        load_dataset("cifar100", 0, None)


def test_synthetic_alpha_beta_follows_the_fedprox_generator():
    data = load_dataset("synthetic_alpha_beta(0.5, 0.5)", 3, client_sizes=[4000, 30])
    assert data.input_shape == (60,) and data.num_classes == 10 and data.client_sizes == [4000, 30]
    (x0, y0), (x1, y1) = data.client_data(0), data.client_data(1)
    assert x0.shape == (4000, 60) and y0.shape == (4000,) and x1.shape == (30, 60)
    assert x0.dtype == torch.float32 and y0.dtype == torch.int64 and 0 <= y0.min() and y0.max() < 10
    assert torch.equal(data.client_data(0)[0], x0)  # made again from (seed, k): the same rows
    assert len(data.y_test) == 1000 + 8  # a quarter of each client's training samples, rounded up
    # x ~ N(v_k, Sigma) with Sigma_jj = j^-1.2: feature 1 has variance 1, feature 60 has 60^-1.2
    var = x0.double().var(0)
    assert var[0].item() == pytest.approx(1.0, rel=0.1)
    assert var[59].item() == pytest.approx(60 ** -1.2, rel=0.1)
    assert parse_name("synthetic_alpha_beta") == ("synthetic_alpha_beta", ())
    assert parse_name("synthetic_alpha_beta(1, 0.5)") == ("synthetic_alpha_beta", (1.0, 0.5))
    with pytest.raises(FlopynetError, match="arguments must be plain numbers"):
        parse_name("synthetic_alpha_beta(__import__)")
    with pytest.raises(FlopynetError, match="takes 2 arguments"):
        load_dataset("synthetic_alpha_beta(1)", 0)


def test_alpha_zero_gives_every_client_the_same_mean_model_and_beta_zero_the_same_feature_mean():
    # alpha = beta = 0: u_k = B_k = 0, so clients differ only by their N(0, 1) draws of W_k and v_k
    data = load_dataset("synthetic_alpha_beta(0, 0)", 5, client_sizes=[3000] * 4)
    means = torch.stack([data.client_data(k)[0].mean(0) for k in range(4)])  # each one ~ v_k ~ N(0, 1)
    assert means.mean().abs().item() < 0.25 and means.std().item() == pytest.approx(1.0, rel=0.2)


def test_generated_series_and_images_have_the_shapes_models_expect():
    series = load_dataset("synthetic_time_series", 0, client_sizes=[600] * 5,
                          model_parameters={"input_size": 100, "num_classes": 5})
    assert series.x_train.shape == (3000, 20, 100) and series.x_test.shape == (750, 20, 100)
    assert series.num_classes == 5 and series.y_train.bincount().tolist() == pytest.approx([600] * 5, abs=60)
    images = load_dataset("synthetic_images", 0)
    assert images.x_train.shape == (2000, 3, 32, 32) and images.num_classes == 10
