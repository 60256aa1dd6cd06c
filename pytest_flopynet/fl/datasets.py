"""Data set registry keyed by `dataset`. Offline only: nothing is downloaded at run time.

A loader is `f(seed, data_dir, **context) -> Dataset`; it declares which context it needs among
`client_sizes` (client_data_sizes, or None), `num_clients` (so generators can size their pool or, for
per-client data, generate each client's share) and `model_parameters` (e.g. the LSTM's `input_size`).
"""
from __future__ import annotations

import gzip
import inspect
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import FlopynetError, UnavailableError


@dataclass
class Dataset:
    """Training pool and held-out test set, as float32 inputs and int64 labels.

    Data sets whose clients differ by construction (FedProx's synthetic data) have no pool to partition:
    they give `client_sizes` and `client_data(k)`, client k's training inputs and labels, made from the
    seed and k when a round asks for them, so a population costs memory only for the clients it trains
    (the pool tensors are then empty, with the inputs' shape)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    client_sizes: list[int] | None = None
    client_data: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


DatasetLoader = Callable[..., Dataset]
DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader `f(seed, data_dir, [client_sizes=...], [num_clients=...], [model_parameters=...],
    [own numeric parameters]) -> Dataset`."""
    def deco(loader: DatasetLoader) -> DatasetLoader:
        DATASETS[name] = loader
        return loader
    return deco


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float = 0.2) -> Dataset:
    from sklearn.model_selection import train_test_split
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed % 2**32, stratify=y)
    t = torch.from_numpy
    return Dataset(t(xtr.astype(np.float32)), t(ytr.astype(np.int64)), t(xte.astype(np.float32)),
                   t(yte.astype(np.int64)), int(y.max()) + 1)


def _pool_size(client_sizes: list[int] | None, default: int) -> int:
    """Generated data sets make enough training samples for every client to have its own."""
    return max(sum(client_sizes), default) if client_sizes else default


# -- bundled and generated ----------------------------------------------------------------------

@register_dataset("digits")
def digits(seed: int, data_dir: Path | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), scaled to [0, 1]; 20% held out."""
    from sklearn.datasets import load_digits
    data = load_digits()
    return _split(data.images / 16.0, data.target, seed)


@register_dataset("synthetic_alpha_beta")
def synthetic_alpha_beta(seed: int, data_dir: Path | None = None, client_sizes: list[int] | None = None,
                         num_clients: int = 30, alpha: float = 1.0, beta: float = 1.0) -> Dataset:
    """Synthetic(alpha, beta) of the FedProx paper (Li et al. 2020, section 5.1), 60 features, 10 classes.

    Per client k: u_k ~ N(0, alpha), W_k ~ N(u_k, 1) (10x60), b_k ~ N(u_k, 1); B_k ~ N(0, beta),
    v_k ~ N(B_k, 1) (60); x ~ N(v_k, Sigma) with Sigma diagonal, Sigma_jj = j^-1.2;
    y = argmax(softmax(W_k x + b_k)). alpha steers how much the clients' models differ, beta how much
    their inputs do. As in the authors' generator, N(0, alpha) and N(0, beta) take alpha and beta as
    standard deviations. Each client gets client_sizes[k] training samples (without sizes: the
    authors' power law, lognormal(4, 2) + 50 samples per client) and a quarter as many test samples, so 20% of all
    data is held out; the global test set is the union of the clients' test samples.
    Named in a scenario as `synthetic_alpha_beta` (alpha = beta = 1) or `synthetic_alpha_beta(0.5, 0.5)`.

    Client k draws from its own generator, seeded by (seed, k): its test samples first, then its training
    samples, made again whenever a round trains it (client_data), so a population of 100,000 holds its
    test set and a number per client, not its training data."""
    if not client_sizes:
        client_sizes = (np.random.default_rng(seed).lognormal(4, 2, num_clients).astype(int) + 50).tolist()
    dim, classes = 60, 10
    scale = np.sqrt(np.arange(1, dim + 1, dtype=np.float64) ** -1.2)

    def client(k: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, k])
        u = rng.normal(0, alpha)
        w = rng.normal(u, 1, (classes, dim))
        b = rng.normal(u, 1, classes)
        v = rng.normal(rng.normal(0, beta), 1, dim)
        n_test = max(1, math.ceil(client_sizes[k] / 4))
        rows = n_test + client_sizes[k] if train else n_test
        x = v + rng.normal(size=(rows, dim)) * scale
        x = x[n_test:] if train else x
        return x.astype(np.float32), (x @ w.T + b).argmax(1)  # argmax(softmax(z)) = argmax(z)

    def client_data(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = client(k, train=True)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    tests = [client(k, train=False) for k in range(len(client_sizes))]
    t = torch.from_numpy
    return Dataset(torch.empty(0, dim), torch.empty(0, dtype=torch.int64),
                   t(np.concatenate([x for x, _ in tests])), t(np.concatenate([y for _, y in tests]).astype(np.int64)),
                   classes, list(client_sizes), client_data)


@register_dataset("synthetic_time_series")
def synthetic_time_series(seed: int, data_dir: Path | None = None, client_sizes: list[int] | None = None,
                          model_parameters: dict | None = None) -> Dataset:
    """Class-dependent sequences of shape [seq_len, input_size] for the LSTM.

    Class c has its own sinusoid per feature (frequency and phase drawn once from the seed); a sample
    is its class's sinusoids, shifted by a random number of steps, plus N(0, 1) noise, so the class
    shows in the shape of the signal and not in any single value. seq_len is 20; input_size
    (default 10) and num_classes (default 5) come from model_parameters when given (the seed's LSTM
    sets input_size 100, num_classes 5). The pool has max(sum(client_data_sizes), 2000) training
    samples plus a quarter as many test samples."""
    params = model_parameters or {}
    features, seq_len = int(params.get("input_size", 10)), 20
    classes = int(params.get("num_classes", 5))
    rng = np.random.default_rng(seed)
    n_train = _pool_size(client_sizes, 2000)
    n = n_train + math.ceil(n_train / 4)
    freq = rng.uniform(0.5, 3.0, (classes, features))  # cycles per sequence
    phase = rng.uniform(0, 2 * np.pi, (classes, features))
    y = np.arange(n) % classes
    rng.shuffle(y)
    t = (np.arange(seq_len)[None, :] + rng.integers(0, seq_len // 4 + 1, n)[:, None]) / seq_len  # [n, seq]
    x = np.sin(2 * np.pi * freq[y][:, None, :] * t[:, :, None] + phase[y][:, None, :])
    x = x + rng.normal(size=x.shape)
    return _tensors(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


@register_dataset("synthetic_images")
def synthetic_images(seed: int, data_dir: Path | None = None, client_sizes: list[int] | None = None,
                     model_parameters: dict | None = None) -> Dataset:
    """Class-structured 3x32x32 images (CIFAR's shape) for CNN, ResNet and MobileNet scenarios.

    Class c has a smooth colour pattern (random 3x4x4 upsampled to 32x32); a sample is its class's
    pattern, scaled by a random contrast in [0.5, 1.5], plus N(0, 0.8^2) pixel noise. num_classes
    (default 10) comes from model_parameters when given. The pool has max(sum(client_data_sizes),
    2000) training samples plus a quarter as many test samples."""
    classes = int((model_parameters or {}).get("num_classes", 10))
    rng = np.random.default_rng(seed)
    n_train = _pool_size(client_sizes, 2000)
    n = n_train + math.ceil(n_train / 4)
    coarse = torch.from_numpy(rng.normal(size=(classes, 3, 4, 4)).astype(np.float32))
    patterns = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False).numpy()
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = np.empty((n, 3, 32, 32), dtype=np.float32)
    for start in range(0, n, 4096):  # in chunks: the float64 noise of a large pool is several GB
        part = slice(start, start + 4096)
        m = len(y[part])
        x[part] = (patterns[y[part]] * rng.uniform(0.5, 1.5, (m, 1, 1, 1))
                   + 0.8 * rng.normal(size=(m, 3, 32, 32))).astype(np.float32)
    return _tensors(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def _tensors(xtr, ytr, xte, yte, classes: int) -> Dataset:
    t = torch.from_numpy
    return Dataset(t(np.ascontiguousarray(xtr, dtype=np.float32)), t(ytr.astype(np.int64)),
                   t(np.ascontiguousarray(xte, dtype=np.float32)), t(yte.astype(np.int64)), classes)


# -- from a local directory, in the distribution formats -----------------------------------------

def _need_dir(name: str, data_dir: Path | None, sub: str) -> Path:
    if data_dir is None:
        raise UnavailableError(f"data set {name!r} is read from a local directory and none is set "
                               f"(--flopynet-data-dir or the ini key flopynet_data_dir; expected {sub}/ in it)")
    return Path(data_dir).expanduser()


def _missing(name: str, looked: list[Path]) -> UnavailableError:
    return UnavailableError(f"data set {name!r} not found: looked for {', '.join(str(p) for p in looked)} "
                            f"(nothing is downloaded at run time)")


# per-channel mean and standard deviation of the CIFAR training images
_CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)[:, None, None]
_CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)[:, None, None]


def _cifar(name: str, data_dir: Path | None, folder: str, train: list[str], test: list[str], label_key: bytes,
           classes: int) -> Dataset:
    root = _need_dir(name, data_dir, folder) / folder
    files = [root / f for f in train + test]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise _missing(name, absent)

    def read(names: list[str]):
        xs, ys = [], []
        for f in names:
            with open(root / f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")  # the CIFAR python format: a pickled dict of arrays
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        x = (np.concatenate(xs).astype(np.float32) / 255.0 - _CIFAR_MEAN) / _CIFAR_STD
        return x, np.concatenate(ys)

    xtr, ytr = read(train)
    xte, yte = read(test)
    return _tensors(xtr, ytr, xte, yte, classes)




@register_dataset("cifar10")
def cifar10(seed: int, data_dir: Path | None = None) -> Dataset:
    """CIFAR-10 from <data_dir>/cifar-10-batches-py/ (data_batch_1..5, test_batch), normalised per channel."""
    return _cifar("cifar10", data_dir, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                  ["test_batch"], b"labels", 10)


@register_dataset("cifar100")
def cifar100(seed: int, data_dir: Path | None = None) -> Dataset:
    """CIFAR-100 (fine labels) from <data_dir>/cifar-100-python/ (train, test), normalised per channel."""
    return _cifar("cifar100", data_dir, "cifar-100-python", ["train"], ["test"], b"fine_labels", 100)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: big-endian magic 0x00 0x00 type ndim, then the dimensions)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise FlopynetError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@register_dataset("mnist")
def mnist(seed: int, data_dir: Path | None = None) -> Dataset:
    """MNIST from the four IDX files (optionally .gz) in <data_dir>, <data_dir>/mnist or
    <data_dir>/MNIST/raw; images as 1x28x28 in [0, 1]."""
    base = _need_dir("mnist", data_dir, "mnist")
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    looked = []
    for folder in (base, base / "mnist", base / "MNIST" / "raw"):
        found = []
        for n in names:
            candidates = [folder / n, folder / f"{n}.gz"]
            found.append(next((c for c in candidates if c.is_file()), None))
        if all(found):
            xtr, ytr, xte, yte = (read_idx(f) for f in found)
            return _tensors(xtr[:, None] / 255.0, ytr.astype(np.int64), xte[:, None] / 255.0, yte.astype(np.int64), 10)
        looked += [folder / n for n, f in zip(names, found) if f is None]
    raise _missing("mnist", looked)


# -- lookup ---------------------------------------------------------------------------------------

_CALL = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\((?P<args>[^()]*)\)$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_name(name: str) -> tuple[str, tuple[float, ...]]:
    """`synthetic_alpha_beta(0.5, 0.5)` -> ("synthetic_alpha_beta", (0.5, 0.5)): the paper's own
    notation. Only plain numbers are accepted; nothing is evaluated."""
    m = _CALL.match(name.replace(" ", ""))
    if not m:
        return name, ()
    args = [a for a in m["args"].split(",")] if m["args"] else []
    if not all(_NUMBER.match(a) for a in args):
        raise FlopynetError(f"fl_config.dataset: {name!r}: arguments must be plain numbers")
    return m["name"], tuple(float(a) for a in args)


_CONTEXT = ("client_sizes", "num_clients", "model_parameters")


def _own_parameters(loader: DatasetLoader) -> list[str]:
    return [p for p in inspect.signature(loader).parameters if p not in ("seed", "data_dir", *_CONTEXT)]


def dataset_problems(name: str) -> list[tuple[str, str]]:
    """(field, reason) for a data set the registry does not have, or numbers its loader does not
    take; the scenario's validation reports them with its file."""
    try:
        base, args = parse_name(name)
    except FlopynetError as exc:
        return [("fl_config.dataset", str(exc).removeprefix("fl_config.dataset: "))]
    if base not in DATASETS:
        return [("fl_config.dataset", f"unknown data set {name!r} (available: {', '.join(sorted(DATASETS))})")]
    own = _own_parameters(DATASETS[base])
    if args and len(args) != len(own):
        return [("fl_config.dataset", f"{name!r}: {base} takes {len(own)} arguments ({', '.join(own) or 'none'}), "
                                      f"got {len(args)}")]
    return []


def load_dataset(name: str, seed: int, data_dir: Path | None = None, *, client_sizes: list[int] | None = None,
                 num_clients: int | None = None, model_parameters: dict | None = None) -> Dataset:
    """The named data set; `name(a, b)` passes numbers to the loader's own parameters (alpha, beta)."""
    for field, reason in dataset_problems(name):
        raise FlopynetError(f"{field}: {reason}")
    base, args = parse_name(name)
    loader = DATASETS[base]
    accepted = inspect.signature(loader).parameters
    kwargs = dict(zip(_own_parameters(loader), args))
    if "client_sizes" in accepted:
        kwargs["client_sizes"] = list(client_sizes) if client_sizes else None
    if "num_clients" in accepted and num_clients:
        kwargs["num_clients"] = num_clients
    if "model_parameters" in accepted:
        kwargs["model_parameters"] = dict(model_parameters or {})
    return loader(seed, data_dir, **kwargs)
