"""Split a training pool over clients."""
from __future__ import annotations

import numpy as np

from ..errors import FlopynetError


def iid(labels: np.ndarray, sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Each client gets exactly sizes[i] samples drawn uniformly; clients are disjoint while the pool
    lasts, and when sum(sizes) exceeds the pool the shuffled pool is reused (never within a client)."""
    n = len(labels)
    if max(sizes) > n:
        raise FlopynetError(f"fl_config.client_data_sizes: a client of {max(sizes)} samples exceeds the "
                            f"training pool of {n}")
    order, pos, parts = rng.permutation(n), 0, []
    for size in sizes:
        take = order[pos:pos + size]
        pos += len(take)
        if len(take) < size:  # pool used up: continue with a fresh shuffle, minus this client's samples
            fresh = rng.permutation(n)
            fresh = fresh[~np.isin(fresh, take)]
            need = size - len(take)
            take, order, pos = np.concatenate([take, fresh[:need]]), fresh, need
        parts.append(np.sort(take))
    return parts


def client_sizes(requested: list[int], num_clients: int, pool: int) -> list[int]:
    """client_data_sizes, or an equal share of the pool for each client when none are given."""
    return list(requested) if requested else [pool // num_clients] * num_clients


PARTITIONERS = {"iid": iid}


def partition(distribution: str, labels: np.ndarray, sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    if distribution not in PARTITIONERS:
        raise FlopynetError(f"fl_config.data_distribution: {distribution!r} is not available in this version "
                            f"(available: {', '.join(PARTITIONERS)})")
    return PARTITIONERS[distribution](labels, sizes, rng)
