"""Data set registry keyed by `dataset`. Offline only: nothing is downloaded at run time."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import FlopynetError


@dataclass
class Dataset:
    """Training pool and held-out test set, as float32 inputs and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


DatasetLoader = Callable[[int, Path | None], Dataset]
DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader `f(seed, data_dir) -> Dataset`."""
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


@register_dataset("digits")
def digits(seed: int, data_dir: Path | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), scaled to [0, 1]; 20% held out."""
    from sklearn.datasets import load_digits
    data = load_digits()
    return _split(data.images / 16.0, data.target, seed)


def load_dataset(name: str, seed: int, data_dir: Path | None = None) -> Dataset:
    if name not in DATASETS:
        raise FlopynetError(f"fl_config.dataset: unknown data set {name!r} (available: {', '.join(sorted(DATASETS))})")
    return DATASETS[name](seed, data_dir)
