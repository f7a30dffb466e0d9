"""The ClientApp: one fl-node worker's round (bench.flower_task.client_round).

The SuperNode's `--node-config 'node-toml="…/worker-<i>/node.toml"'` names the fl-node
worker this client stands for: its shard, [training] settings and torch thread count.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from bench.flower_task import client_round, process_age

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    base = message.content["arrays"].to_torch_state_dict()
    config = message.content["config"]
    work = client_round(
        Path(str(context.node_config["node-toml"])),
        str(config["model"]),
        dict(base),
        int(config["server-round"]),
    )
    metrics = MetricRecord(
        {
            "num-examples": work.samples,
            "load-seconds": work.load_seconds,
            "train-seconds": work.train_seconds,
            # this ClientApp process's age when it replies: Flower starts one per message
            "process-seconds": process_age(),
        }
    )
    content = RecordDict({"arrays": ArrayRecord(work.state), "metrics": metrics})
    return Message(content=content, reply_to=message)
