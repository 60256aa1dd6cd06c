"""Federated learning: models, data sets, partitioning, aggregation, client training, the cluster.

`pytest_flopynet.fl.aggregate(method, updates, weights, **parameters)` is the stateless aggregation
rules as one plain function over flat tensors (fl/aggregation.py), loaded on first use: it imports
torch, and the plugin and the command line import this package's names without it."""

from ..settings import EXECUTORS, EXECUTORS_HELP  # noqa: F401 (the run setting that names them)

LOCAL_DATASETS = ("cifar10", "cifar100", "mnist")  # read from --flopynet-data-dir, never downloaded


def __getattr__(name: str):
    if name == "aggregate":
        from .aggregation import aggregate
        return aggregate
    raise AttributeError(name)
