"""Federated learning: models, data sets, partitioning, aggregation, client training, the cluster.

`pytest_flopynet.fl.aggregate(method, updates, weights, **parameters)` is the stateless aggregation
rules as one plain function over flat tensors (fl/aggregation.py), loaded on first use: it imports
torch, and the plugin and the command line import this package's names without it."""

EXECUTORS = {  # how clients train, by the name --flopynet-executor takes (fl/executor.py builds them)
    "auto": "batched where it pays (on a GPU; on a CPU from 3 clients of a model with light layers), else sequential",
    "sequential": "one client after another",
    "batched": "every client of a round at once (torch.func vmap; CUDA graphs on a GPU)",
    "compiled": "batched, with torch.compile and, on a GPU, 3x3 convolutions as one Triton kernel for all clients "
                "(a slow first round per group shape, faster rounds after)",
}
EXECUTORS_HELP = "how clients train: " + "; ".join(f"{name}: {what}" for name, what in EXECUTORS.items())


def __getattr__(name: str):
    if name == "aggregate":
        from .aggregation import aggregate
        return aggregate
    raise AttributeError(name)
