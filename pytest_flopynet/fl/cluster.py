"""The FL cluster: a server's global model and its clients' data, trained for real with PyTorch."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..model import ScenarioConfig, by_client_number, rule_spec
from ..seeds import derive_seed
from .aggregation import make_aggregator
from .attacks import Tamper
from .datasets import load_dataset
from .executors import LocalTask, Update, make_executor
from .models import build_model, forward_flops
from .partition import Partitioner, client_sizes, partition


@dataclass
class ClientState:
    """A client's data and what events currently do to it; every list holds one entry per active
    event, so overlapping events compose and ending one removes only its part."""

    name: str
    samples: int
    flops_per_second: float
    indices: np.ndarray | None = None  # its rows of a pooled data set; None: the data set makes its own (number)
    number: int = 0
    away: list[object] = field(default_factory=list)  # leave / failure / not yet joined
    intermittent: list[float] = field(default_factory=list)  # reconnect probability per round
    slowdowns: list[float] = field(default_factory=list)  # CPU slowdown factors
    memory_limits_mb: list[float] = field(default_factory=list)
    generation: int = 0  # bumped when the client goes away, so an update it was working on is lost
    tampers: list[Tamper] = field(default_factory=list)  # active attacks and drifts, oldest first

    @property
    def available(self) -> bool:
        return not self.away


class FLCluster:
    def __init__(self, config: ScenarioConfig, seed: int, data_dir: Path | None = None, *,
                 partitioner: Partitioner | None = None, executor: str = "auto", workers: int = 1):
        """`partitioner` replaces the split data_distribution names (e.g. Dirichlet with another alpha);
        `executor` names one of fl.EXECUTORS: "auto" (batched where it pays, see AutoExecutor),
        "sequential", "batched" or "compiled" (batched with torch.compile); `workers`: clients trained at
        once, each on one thread, by executors that can (SequentialExecutor.workers; same results)."""
        fl = config.fl_config
        self.config, self.seed = config, seed
        names = config.client_names
        self.data = load_dataset(fl.dataset, derive_seed(seed, "data"), data_dir, client_sizes=fl.client_data_sizes,
                                 num_clients=len(names), model_parameters=fl.model_parameters)
        torch.manual_seed(derive_seed(seed, "init"))
        self.model = build_model(fl.model_architecture, fl.model_parameters, self.data.input_shape,
                                 self.data.num_classes)
        self.global_params = parameters_to_vector(self.model.parameters()).detach().clone()
        self.model_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.flops_per_sample = 3 * forward_flops(self.model, self.data.input_shape)
        flops = fl.client_compute_gflops * 1e9
        if self.data.client_data is not None:  # per-client data by construction: nothing to split
            self.clients = {n: ClientState(n, size, flops, number=k)
                            for k, (n, size) in enumerate(zip(names, self.data.client_sizes))}
        else:
            sizes = client_sizes(fl.client_data_sizes, len(names), len(self.data.y_train))
            rng = np.random.default_rng(derive_seed(seed, "partition"))
            labels = self.data.y_train.numpy()
            parts = partitioner(labels, sizes, rng) if partitioner else partition(fl.data_distribution, labels, sizes, rng)
            self.clients = {n: ClientState(n, len(idx), flops, idx) for n, idx in zip(names, parts)}
        self.round = 0  # the round being selected, for per-round draws (intermittent clients)
        self.rule = rule_spec(fl.aggregation_method)  # what the rule asks of clients (model.specs)
        self.executor = make_executor(executor, self.model, local_epochs=fl.local_epochs, batch_size=fl.batch_size,
                                      learning_rate=fl.learning_rate, mu=self.rule.proximal_mu(fl.aggregation_parameters))
        if workers > 1 and hasattr(self.executor, "workers"):
            self.executor.workers = workers
        self.aggregator = make_aggregator(fl.aggregation_method, fl.aggregation_parameters)
        self.server_state: dict = {"num_clients": len(names)}  # the aggregator's memory between rounds
        self.control_variates: dict[str, torch.Tensor] = {}  # SCAFFOLD's c_i, zero until a client reports

    # -- membership ----------------------------------------------------------------------
    def available(self) -> list[str]:
        """Clients that can train this round: present, connected this round, within memory."""
        return [c.name for c in self.clients.values() if self.is_available(c.name)]

    def is_available(self, name: str) -> bool:
        c = self.clients[name]
        if c.away or (c.memory_limits_mb and min(c.memory_limits_mb) < self.training_memory_mb(name)):
            return False
        if c.intermittent:
            rng = np.random.default_rng(derive_seed(self.seed, "intermittent", self.round, name))
            return bool(rng.random() < float(np.prod(c.intermittent)))
        return True

    def go_away(self, name: str, token: object) -> None:
        client = self.clients[name]
        if not client.away:
            client.generation += 1
        client.away.append(token)

    def come_back(self, name: str, token: object) -> None:
        self.clients[name].away.remove(token)

    def training_memory_mb(self, name: str) -> float:
        """What local training holds in memory: weights, gradients, optimizer state and the received
        global model (4 x model bytes), plus the client's data."""
        c = self.clients[name]
        data = (4 * math.prod(self.data.input_shape) + 8) * c.samples
        return (4 * self.model_bytes + data) / 2**20

    def select(self, candidates: list[str], k: int, round_number: int) -> list[str]:
        """k clients drawn uniformly among the candidates, seeded per round."""
        rng = np.random.default_rng(derive_seed(self.seed, "select", round_number))
        chosen = rng.choice(len(candidates), size=min(k, len(candidates)), replace=False)
        return by_client_number(candidates[i] for i in chosen)

    # -- a round ----------------------------------------------------------------------------
    def compute_seconds(self, name: str) -> float:
        """Scenario seconds the client needs for its local epochs."""
        c = self.clients[name]
        work = c.samples * self.config.fl_config.local_epochs * self.flops_per_sample
        return work / c.flops_per_second * float(np.prod(c.slowdowns))

    def device_seconds(self, name: str) -> float:
        """Scenario seconds the client's device (client_compute_gflops) needs for its local epochs, without
        resource_constraint slowdowns: what a node process's training lasts at least (the nodes executor)."""
        c = self.clients[name]
        return c.samples * self.config.fl_config.local_epochs * self.flops_per_sample / c.flops_per_second

    @property
    def keeps_partial_work(self) -> bool:
        """FedProx aggregates what a straggler managed before the deadline (Li et al. 2020); the other
        rules drop stragglers (the rule's spec says which it does)."""
        return self.rule.keeps_partial_work

    def work_fraction(self, name: str, seconds: float) -> float:
        """The share of its local epochs the client completes in `seconds` of compute, in [0, 1]."""
        needed = self.compute_seconds(name)
        return 1.0 if needed <= 0 else max(0.0, min(1.0, seconds / needed))

    def local_steps(self, name: str) -> int:
        """SGD steps of the client's full local work: local_epochs x ceil(samples / batch_size)."""
        fl = self.config.fl_config
        return fl.local_epochs * -(-self.clients[name].samples // fl.batch_size)

    def train(self, names: list[str], round_number: int, work: dict[str, float] | None = None,
              tampers: dict[str, list[Tamper]] | None = None) -> list[Update]:
        """Local training of each named client from the current global model, with its active
        data attacks applied to its data before and its update attacks to its parameters after.

        `work` gives a client a fraction of its local steps (a straggler's partial work, at least one
        step); the others do all their local epochs. For SCAFFOLD each client's gradient is corrected
        by c - c_i. `tampers` replaces the clients' active attacks by those in force when each started
        training (the orchestrator trains every client of a round in one batch at its end)."""
        work = work or {}
        active = {name: self.clients[name].tampers for name in names}
        active.update(tampers or {})
        scaffold = self.rule.control_variates
        c = self.server_state.get("c")
        tasks = []
        for name in names:
            x, y = self.client_data(name)
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "tamper-data", round_number, name))
            for tamper in active[name]:
                if tamper.on_data:
                    x, y = tamper.data(x, y, self.data.num_classes, gen)
            max_steps = max(1, int(work[name] * self.local_steps(name))) if name in work else None
            correction = None
            if scaffold and c is not None:
                correction = c - self.control_variates.get(name, torch.zeros_like(c))
            tasks.append(LocalTask(name, x, y, derive_seed(self.seed, "train", round_number, name), max_steps,
                                   correction))
        updates = self.executor.train(self.global_params, tasks)
        for u in updates:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "tamper-update", round_number, u.client))
            for tamper in active[u.client]:
                if not tamper.on_data:
                    u.params = tamper.update(u.params, self.global_params, gen)
        return updates

    def client_data(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The client's training inputs and labels: its rows of the pool, or made by the data set."""
        c = self.clients[name]
        if c.indices is None:
            return self.data.client_data(c.number)
        idx = torch.from_numpy(c.indices)
        return self.data.x_train[idx], self.data.y_train[idx]

    def add_tamper(self, name: str, tamper: Tamper) -> None:
        self.clients[name].tampers.append(tamper)

    def remove_tamper(self, name: str, tamper: Tamper) -> None:
        self.clients[name].tampers.remove(tamper)

    def aggregate(self, updates: list[Update]) -> None:
        """The new global model from the updates that reached the server, through the Aggregator."""
        if self.rule.control_variates:
            self._scaffold_client_variates(updates)
        self.global_params = self.aggregator.aggregate(self.global_params, [u.params for u in updates],
                                                       [u.num_samples for u in updates], self.server_state)

    def _scaffold_client_variates(self, updates: list[Update]) -> None:
        """The aggregated clients' control-variate differences c_i+ - c_i, passed on to the rule: those the
        clients sent (node processes keep their own c_i), else worked out here (each client's c_i is kept)."""
        deltas = {}
        for u in updates:
            deltas[u.client] = u.control_delta if u.control_delta is not None else self.advance_control_variate(u)
        self.server_state["client_deltas"] = deltas

    def advance_control_variate(self, update: Update) -> torch.Tensor:
        """Option II of SCAFFOLD: c_i+ = c_i - c + (x - y_i) / (K lr), K the client's local steps, x the
        global model it trained from; c_i+ is kept, c_i+ - c_i returned (what the server needs)."""
        c = self.server_state.get("c", torch.zeros_like(self.global_params))
        old = self.control_variates.get(update.client)
        lr = self.config.fl_config.learning_rate
        new = (torch.zeros_like(c) if old is None else old) - c + (self.global_params - update.params) / (max(update.steps, 1) * lr)
        self.control_variates[update.client] = new
        return new - (0 if old is None else old)

    @property
    def transfer_bytes(self) -> int:
        """What a round carries each way per client: the model, and SCAFFOLD's control variate with it
        (c down, c_i+ - c_i up: twice FedAvg's traffic, as in Karimireddy et al. 2020)."""
        return self.model_bytes * (2 if self.rule.control_variates else 1)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Accuracy and mean cross-entropy of the global model on the held-out test set."""
        vector_to_parameters(self.global_params, self.model.parameters())
        self.model.eval()
        logits = self.model(self.data.x_test)
        loss = torch.nn.functional.cross_entropy(logits, self.data.y_test).item()
        accuracy = (logits.argmax(1) == self.data.y_test).double().mean().item()
        return accuracy, loss


def train_rounds(cluster: FLCluster, count: int, stragglers: float = 0.0) -> list[float]:
    """`count` network-free rounds (select, train, aggregate, evaluate), for tests and benchmarks of
    the FL engine alone; the test accuracy after each. With stragglers, that share of the selected
    clients gets a random 1..E of its E epochs done: kept as partial work when the rule keeps it
    (FedProx), else the straggler is dropped."""
    fl, names, accuracies = cluster.config.fl_config, list(cluster.clients), []
    for r in range(1, count + 1):
        selected = cluster.select(names, fl.clients_per_round, r)
        rng = np.random.default_rng(derive_seed(cluster.seed, "stragglers", r))
        slow = [selected[i] for i in rng.choice(len(selected), int(stragglers * len(selected)), replace=False)]
        work = {c: rng.integers(1, fl.local_epochs + 1) / fl.local_epochs for c in slow}
        if cluster.keeps_partial_work:
            updates = cluster.train(selected, r, work)
        else:
            updates = cluster.train([c for c in selected if c not in slow], r)
        if updates:
            cluster.aggregate(updates)
        accuracies.append(cluster.evaluate()[0])
    return accuracies
