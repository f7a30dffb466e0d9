"""The ServerApp: FedAvg for the task's rounds over every SuperNode, the global model
measured after each round on the fl-node requester's validation set, and each round's
times appended to the run config's `results` file for bench.flower_baseline (and the
final global model written to `final-model`, when it names a file)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from bench.flower_task import Requester

app = ServerApp()

CLIENT_TIMES = ("load-seconds", "train-seconds", "process-seconds")


class Journal:
    """Appends one JSON object a line; the bench reads them after the run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, "at": time.time(), **fields}) + "\n")


class JournaledFedAvg(FedAvg):
    """FedAvg that notes when each round starts (its training messages are made) and what
    the clients said their time went to."""

    def __init__(self, journal: Journal, **options: Any) -> None:
        super().__init__(**options)
        self.journal = journal

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.journal.write("round", round=server_round)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        clients = [
            {key: float(m.content["metrics"][key]) for key in CLIENT_TIMES}
            for m in replies
            if not m.has_error()
        ]
        errors = [m.error.reason for m in replies if m.has_error()]
        self.journal.write("trained", round=server_round, clients=clients, errors=errors)
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    journal = Journal(Path(str(context.run_config["results"])))
    journal.write("serverapp")
    requester = Requester.load(Path(str(context.run_config["requester-toml"])))
    workers = int(context.run_config["workers"])
    strategy = JournaledFedAvg(
        journal,
        fraction_train=1.0,
        fraction_evaluate=0.0,  # fl-node's workers do not evaluate: the requester does
        min_train_nodes=workers,
        min_available_nodes=workers,
    )

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        accuracy = requester.accuracy(dict(arrays.to_torch_state_dict()))
        journal.write("evaluated", round=server_round, accuracy=accuracy)
        return MetricRecord({"accuracy": accuracy})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(requester.initial_state()),
        num_rounds=requester.rounds,
        train_config=ConfigRecord({"model": requester.model}),
        evaluate_fn=evaluate,
    )
    final = str(context.run_config["final-model"])
    if final:  # plain arrays, read back with numpy.load(allow_pickle=False)
        state = result.arrays.to_torch_state_dict()
        np.savez(final, **{name: tensor.numpy() for name, tensor in state.items()})
    journal.write("done")
