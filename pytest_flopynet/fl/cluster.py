"""The FL cluster: a server's global model and its clients' data, trained for real with PyTorch."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..model import ScenarioConfig
from ..seeds import derive_seed
from .aggregation import aggregate
from .attacks import Tamper
from .datasets import load_dataset
from .executor import LocalTask, SequentialExecutor, Update
from .models import build_model, forward_flops
from .partition import client_sizes, partition


@dataclass
class DeviceProfile:
    """How fast a client computes: training costs about 3x the forward FLOPs per sample."""

    flops_per_second: float = 2e10  # an edge-class CPU core
    slowdown: float = 1.0


@dataclass
class ClientState:
    name: str
    indices: np.ndarray
    device: DeviceProfile
    available: bool = True
    generation: int = 0  # bumped when the client fails, so an update started before is lost
    tampers: list[Tamper] = field(default_factory=list)  # active attacks and drifts, oldest first


class FLCluster:
    def __init__(self, config: ScenarioConfig, seed: int, data_dir: Path | None = None):
        fl = config.fl_config
        self.config, self.seed = config, seed
        self.data = load_dataset(fl.dataset, derive_seed(seed, "data"), data_dir)
        torch.manual_seed(derive_seed(seed, "init"))
        self.model = build_model(fl.model_architecture, fl.model_parameters, self.data.input_shape,
                                 self.data.num_classes)
        self.global_params = parameters_to_vector(self.model.parameters()).detach().clone()
        self.model_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.flops_per_sample = 3 * forward_flops(self.model, self.data.input_shape)
        names = config.client_names
        sizes = client_sizes(fl.client_data_sizes, len(names), len(self.data.y_train))
        parts = partition(fl.data_distribution, self.data.y_train.numpy(), sizes,
                          np.random.default_rng(derive_seed(seed, "partition")))
        self.clients = {n: ClientState(n, idx, DeviceProfile()) for n, idx in zip(names, parts)}
        self.executor = SequentialExecutor(self.model, local_epochs=fl.local_epochs, batch_size=fl.batch_size,
                                           learning_rate=fl.learning_rate,
                                           mu=float(fl.aggregation_parameters.get("mu", 0.0))
                                           if fl.aggregation_method == "fedprox" else 0.0)

    # -- membership ----------------------------------------------------------------------
    def available(self) -> list[str]:
        return [c.name for c in self.clients.values() if c.available]

    def set_available(self, name: str, available: bool) -> None:
        client = self.clients[name]
        if client.available and not available:
            client.generation += 1
        client.available = available

    def select(self, candidates: list[str], k: int, round_number: int) -> list[str]:
        """k clients drawn uniformly among the candidates, seeded per round."""
        rng = np.random.default_rng(derive_seed(self.seed, "select", round_number))
        chosen = rng.choice(len(candidates), size=min(k, len(candidates)), replace=False)
        return sorted((candidates[i] for i in chosen), key=lambda c: int(c.split("_")[1]))

    # -- a round ----------------------------------------------------------------------------
    def compute_seconds(self, name: str) -> float:
        """Scenario seconds the client needs for its local epochs."""
        c = self.clients[name]
        work = len(c.indices) * self.config.fl_config.local_epochs * self.flops_per_sample
        return work / c.device.flops_per_second * c.device.slowdown

    def train(self, names: list[str], round_number: int) -> list[Update]:
        """Local training of each named client from the current global model, with its active
        data attacks applied to its data before and its update attacks to its parameters after."""
        tasks = []
        for name in names:
            idx = torch.from_numpy(self.clients[name].indices)
            x, y = self.data.x_train[idx], self.data.y_train[idx]
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "tamper-data", round_number, name))
            for tamper in self.clients[name].tampers:
                if tamper.on_data:
                    x, y = tamper.data(x, y, self.data.num_classes, gen)
            tasks.append(LocalTask(name, x, y, derive_seed(self.seed, "train", round_number, name)))
        updates = self.executor.train(self.global_params, tasks)
        for u in updates:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "tamper-update", round_number, u.client))
            for tamper in self.clients[u.client].tampers:
                if not tamper.on_data:
                    u.params = tamper.update(u.params, self.global_params, gen)
        return updates

    def add_tamper(self, name: str, tamper: Tamper) -> None:
        self.clients[name].tampers.append(tamper)

    def remove_tamper(self, name: str, tamper: Tamper) -> None:
        self.clients[name].tampers.remove(tamper)

    def aggregate(self, updates: list[Update]) -> None:
        fl = self.config.fl_config
        self.global_params = aggregate(fl.aggregation_method, [u.params for u in updates],
                                       [u.num_samples for u in updates], **fl.aggregation_parameters)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Accuracy and mean cross-entropy of the global model on the held-out test set."""
        vector_to_parameters(self.global_params, self.model.parameters())
        self.model.eval()
        logits = self.model(self.data.x_test)
        loss = torch.nn.functional.cross_entropy(logits, self.data.y_test).item()
        accuracy = (logits.argmax(1) == self.data.y_test).double().mean().item()
        return accuracy, loss
