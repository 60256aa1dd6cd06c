"""Split a training pool over clients, honouring every client's size exactly.

`data_distribution` picks the split: `iid` (uniform), `non_iid` (label-Dirichlet with alpha 0.5, the
usual non-IID benchmark of Hsu et al. 2019) and `custom` (McMahan et al. 2017's label shards: sort by
label, two shards per client). FLConfig has no field for a split's own parameters, so other values
(Dirichlet(0.1), three shards per client, a user's own split) are set from Python:
`FLCluster(config, seed, partitioner=functools.partial(dirichlet, alpha=0.1))`, or by registering a
function under one of the three names with `register_partitioner`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import FlopynetError

Partitioner = Callable[[np.ndarray, list[int], np.random.Generator], list[np.ndarray]]


def _check_sizes(sizes: list[int], n: int) -> None:
    if max(sizes) > n:
        raise FlopynetError(f"fl_config.client_data_sizes: a client of {max(sizes)} samples exceeds the "
                            f"training pool of {n}")


def _draw(queue: np.ndarray, pos: int, k: int, pool: np.ndarray, rng: np.random.Generator):
    """k items from a shuffled queue starting at pos; when it runs out, a fresh shuffle of the pool
    continues it (without the items already taken, so one client never gets a sample twice)."""
    take = queue[pos:pos + k]
    pos += len(take)
    if len(take) < k:
        fresh = rng.permutation(pool)
        fresh = fresh[~np.isin(fresh, take)]
        need = k - len(take)
        take, queue, pos = np.concatenate([take, fresh[:need]]), fresh, need
    return take, queue, pos


def iid(labels: np.ndarray, sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Each client gets exactly sizes[i] samples drawn uniformly; clients are disjoint while the pool
    lasts, and when sum(sizes) exceeds the pool the shuffled pool is reused (never within a client)."""
    n = len(labels)
    _check_sizes(sizes, n)
    everything = np.arange(n)
    queue, pos, parts = rng.permutation(n), 0, []
    for size in sizes:
        take, queue, pos = _draw(queue, pos, size, everything, rng)
        parts.append(np.sort(take))
    return parts


def dirichlet(labels: np.ndarray, sizes: list[int], rng: np.random.Generator, alpha: float = 0.5) -> list[np.ndarray]:
    """Label-Dirichlet split (Hsu et al. 2019): client i draws class proportions p_i ~ Dir(alpha) and
    then sizes[i] labels from Multinomial(p_i); small alpha gives clients few classes. A class with
    fewer samples than asked hands its excess to the client's other classes. Samples within a class
    are shared out as in `iid` (disjoint while the class lasts)."""
    if alpha <= 0:
        raise FlopynetError(f"non_iid (Dirichlet) split: alpha must be positive, got {alpha}")
    _check_sizes(sizes, len(labels))
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    caps = np.array([len(m) for m in members])
    queues, positions, parts = [rng.permutation(m) for m in members], [0] * len(classes), []
    for size in sizes:
        p = rng.dirichlet(np.full(len(classes), alpha))
        if not np.all(np.isfinite(p)) or p.sum() <= 0:  # underflow at tiny alpha: all mass on one class
            p = np.eye(len(classes))[rng.integers(len(classes))]
        counts = rng.multinomial(size, p / p.sum())
        while np.any(counts > caps):
            excess = int(np.maximum(counts - caps, 0).sum())
            counts = np.minimum(counts, caps)
            room = (caps - counts).astype(float)
            weights = np.where(room > 0, p, 0.0)
            weights = weights if weights.sum() > 0 else (room > 0).astype(float)
            counts = counts + rng.multinomial(excess, weights / weights.sum())
        take = []
        for c, k in enumerate(counts):
            chunk, queues[c], positions[c] = _draw(queues[c], positions[c], int(k), members[c], rng)
            take.append(chunk)
        parts.append(np.sort(np.concatenate(take)))
    return parts


def shards(labels: np.ndarray, sizes: list[int], rng: np.random.Generator, per_client: int = 2) -> list[np.ndarray]:
    """Label shards (McMahan et al. 2017): the samples, sorted by label, are cut into `per_client`
    shards per client (client i's shards together hold sizes[i] samples) and the shards are dealt at
    random, so each client sees only a few labels. Needs sum(sizes) <= the pool; a smaller total
    first draws that many samples uniformly, so every label stays represented."""
    total = sum(sizes)
    if total > len(labels):
        raise FlopynetError(f"fl_config.client_data_sizes: the label-shard split needs distinct samples, "
                            f"but the clients ask for {total} and the training pool has {len(labels)}")
    chosen = rng.choice(len(labels), size=total, replace=False)
    ordered = chosen[np.argsort(labels[chosen], kind="stable")]
    pieces = [(client, len(part)) for client, size in enumerate(sizes)
              for part in np.array_split(np.arange(size), per_client) if len(part)]
    owners = [[] for _ in sizes]
    pos = 0
    for i in rng.permutation(len(pieces)):
        client, length = pieces[i]
        owners[client].append(ordered[pos:pos + length])
        pos += length
    return [np.sort(np.concatenate(o)) for o in owners]


def client_sizes(requested: list[int], num_clients: int, pool: int) -> list[int]:
    """client_data_sizes, or an equal share of the pool for each client when none are given."""
    return list(requested) if requested else [pool // num_clients] * num_clients


PARTITIONERS: dict[str, Partitioner] = {"iid": iid, "non_iid": dirichlet, "custom": shards}


def register_partitioner(name: str) -> Callable[[Partitioner], Partitioner]:
    """Make `f(labels, sizes, rng) -> list of index arrays` the split that data_distribution `name` selects."""
    def deco(f: Partitioner) -> Partitioner:
        PARTITIONERS[name] = f
        return f
    return deco


def partition(distribution: str, labels: np.ndarray, sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    if distribution not in PARTITIONERS:
        raise FlopynetError(f"fl_config.data_distribution: unknown split {distribution!r} "
                            f"(available: {', '.join(PARTITIONERS)})")
    return PARTITIONERS[distribution](labels, sizes, rng)
