"""The node's status page: task progress, members, budgets, the learning curve
and rewards — the panels of Refiner's demo — served over HTTP on ``[node] status_listen``.

``GET /`` is a small self-contained HTML page that polls ``GET /status.json``. The JSON is
built by a pure function (:func:`status_document`) from the node's own status and a
:class:`~node.chain.tracker.TaskTracker` that :class:`TaskWatch` feeds with the task's chain
events: the node's chain follower hands it each read, and once the task's history before
this process started, so a restarted node shows the whole task.

The server is deliberately tiny: GET only, one request per connection, the request head
bounded in bytes and time, a bounded number of connections. It serves read-only data and
binds to 127.0.0.1 unless the operator says otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from node.chain.client import ChainClient
from node.chain.events import ChainBlock
from node.chain.tracker import TaskTracker, ValidatorOutcome, WorkerOutcome
from node.chain.types import TaskParams
from node.config import parse_listen
from protocol.fixedpoint import SCALE

__all__ = [
    "MAX_REQUEST_BYTES",
    "NodeReport",
    "TaskWatch",
    "respond",
    "serve_status",
    "status_document",
]

logger = logging.getLogger("fl_node.status")

MAX_REQUEST_BYTES = 8192  # a GET's head; anything longer is refused
REQUEST_TIMEOUT_S = 5.0  # to send that head
MAX_CONNECTIONS = 16


class NodeReport(Protocol):
    """What the page shows of the node itself (the runtime's NodeStatus is one)."""

    name: str
    role: str
    address: str
    task: str | None
    round: int
    phase: str
    done: bool
    failed_txs: list[str]
    accuracy_by_round: dict[int, float]


# --- the document -----------------------------------------------------------------------


def status_document(
    node: NodeReport, tracker: TaskTracker, params: TaskParams | None
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (amounts in wei as decimal strings,
    accuracies as fractions)."""
    rounds = []
    earned: dict[str, int] = {}
    slashed: dict[str, int] = {}
    for number in sorted(tracker.rounds):
        record = tracker.rounds[number]
        outcomes: dict[str, WorkerOutcome | ValidatorOutcome] = {**record.workers, **record.validators}
        for address, outcome in outcomes.items():
            earned[address] = earned.get(address, 0) + outcome.payout
            slashed[address] = slashed.get(address, 0) + outcome.slash
        rounds.append(
            {
                "round": number,
                "phase": str(record.phase),
                "submissions": len(record.submissions),
                "commits": len(record.committed),
                "reveals": len(record.reveals),
                "accepted": record.accepted,
                "rejected": record.rejected,
                "consensus_accuracy": None if record.consensus_accuracy is None
                else record.consensus_accuracy / SCALE,
                "payouts": {a: str(o.payout) for a, o in outcomes.items() if o.payout},
                "slashes": {a: str(o.slash) for a, o in outcomes.items() if o.slash},
            }
        )
    members = [
        {
            "address": address,
            "role": role,
            "left": address in tracker.left,
            # A validator's own stake (it weighs the sortition), a worker's deposit.
            "stake_wei": str(tracker.joined_with.get(address, 0)),
            "earned_wei": str(earned.get(address, 0)),
            "slashed_wei": str(slashed.get(address, 0)),
            "withdrawn_wei": str(tracker.withdrawn.get(address, 0)),
        }
        for address, role in sorted(tracker.members.items())
    ]
    own_stake = {a.lower(): amount for a, amount in tracker.joined_with.items()}.get(node.address.lower())
    return {
        "node": {
            "name": node.name,
            "role": node.role,
            "address": node.address,
            "stake_wei": None if own_stake is None else str(own_stake),  # None: not a member
            "phase": node.phase,
            "round": node.round,
            "done": node.done,
            "failed_txs": list(node.failed_txs),
            "accuracy_by_round": {str(r): a for r, a in sorted(node.accuracy_by_round.items())},
        },
        "task": None if node.task is None else {
            "address": node.task,
            "status": None if tracker.status is None else tracker.status.name.lower(),
            "termination": None if tracker.termination is None else tracker.termination.name.lower(),
            "escrow_left_wei": None if tracker.escrow is None else str(tracker.escrow),
            "params": None if params is None else _params_document(params),
        },
        "members": members,
        "rounds": rounds,
    }


def _params_document(params: TaskParams) -> dict[str, Any]:
    return {
        "model": params.model_arch,
        "aggregator": params.aggregator,
        "rounds": params.rounds,
        "worker_reward_per_round_wei": str(params.worker_reward_per_round),
        "validator_reward_per_round_wei": str(params.validator_reward_per_round),
        "escrow_wei": str(params.escrow),
        "worker_deposit_wei": str(params.worker_deposit),
        "validator_stake_wei": str(params.validator_stake),
        "committee_size": params.committee_size,
        "qualification_threshold": params.qualification_threshold / SCALE,
        "target_accuracy": params.target_accuracy / SCALE,
        "reward_policy": params.reward_policy.name.lower(),
    }


# --- following the task -----------------------------------------------------------------


class TaskWatch:
    """The node's task as its chain events tell it: a consumer of the node's chain follower.

    `history(task)` gives the task's blocks the follower read before this process started
    (the machine's cursor resumes; the page starts empty). `feed` runs on the chain thread,
    `document` on the page's: a lock keeps the tracker whole between them.
    """

    def __init__(
        self,
        node: NodeReport,
        client: ChainClient,
        history: Callable[[str], Sequence[ChainBlock]],
    ) -> None:
        self.node = node
        self.client = client
        self.history = history
        self.task: str | None = None
        self.tracker = TaskTracker()
        self.params: TaskParams | None = None
        self._lock = threading.Lock()

    def document(self) -> dict[str, Any]:
        with self._lock:
            return status_document(self.node, self.tracker, self.params)

    def feed(self, blocks: Sequence[ChainBlock]) -> None:
        """One read of the node's follower (blocking: the task's parameters and history are
        read from the chain when the node's task first appears)."""
        task = self.node.task
        if task is None:
            return
        if self.task is None:
            self.params = self.client.task_params(task)
            blocks = [*self.history(task), *blocks]
            self.task = task
        with self._lock:
            for block in blocks:
                for event in block.events:
                    if event.address.lower() == task.lower():
                        self.tracker.feed(event, block.timestamp)


# --- HTTP -------------------------------------------------------------------------------


def respond(head: bytes, document: Callable[[], dict[str, Any]]) -> bytes:
    """The whole HTTP response to a request `head` (request line and headers)."""
    try:
        request_line = head.split(b"\r\n", 1)[0].decode("ascii")
        method, target, version = request_line.split(" ")
    except (UnicodeDecodeError, ValueError):
        return _response(400, "text/plain", b"bad request line\n")
    if not version.startswith("HTTP/1."):
        return _response(505, "text/plain", b"HTTP/1.x only\n")
    if method not in ("GET", "HEAD"):
        return _response(405, "text/plain", b"GET only\n", extra="Allow: GET, HEAD\r\n")
    path = target.split("?", 1)[0]
    if path == "/":
        body, kind = PAGE.encode(), "text/html; charset=utf-8"
    elif path == "/status.json":
        body, kind = json.dumps(document(), indent=1).encode(), "application/json"
    else:
        return _response(404, "text/plain", b"not found: try / or /status.json\n")
    return _response(200, kind, body, head_only=method == "HEAD")


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            505: "HTTP Version Not Supported"}


def _response(
    code: int, kind: str, body: bytes, extra: str = "", head_only: bool = False
) -> bytes:
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
        f"{extra}\r\n"
    ).encode()
    return head if head_only else head + body


async def _read_head(stream: trio.SocketStream) -> bytes | int:
    """The request head, or the error status to answer with."""
    data = b""
    with trio.move_on_after(REQUEST_TIMEOUT_S):
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_REQUEST_BYTES:
                return 431
            chunk = await stream.receive_some(MAX_REQUEST_BYTES)
            if not chunk:
                return 400
            data += chunk
        return data.split(b"\r\n\r\n", 1)[0]
    return 408


async def serve_status(
    host: str,
    port: int,
    document: Callable[[], dict[str, Any]],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,  # trio.TaskStatus[int]; trio-typing's old stubs lack it
) -> None:
    """Serve the page until cancelled; `task_status.started` gets the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        async with limiter, stream:
            head = await _read_head(stream)
            if isinstance(head, int):
                reply = _response(head, "text/plain", f"{_REASONS[head].lower()}\n".encode())
            else:
                reply = respond(head, document)
            try:
                await stream.send_all(reply)
                # Half-close, then read what the client still sends, briefly: closing with
                # unread input resets the connection and the client may lose our reply.
                await stream.send_eof()
                with trio.move_on_after(1.0):
                    for _ in range(16):
                        if not await stream.receive_some(MAX_REQUEST_BYTES):
                            break
            except trio.BrokenResourceError:
                pass  # the client went away

    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)


async def run_status_page(listen: str, watch: TaskWatch) -> None:
    """The page until cancelled (the node's chain follower feeds `watch`). A port we cannot
    bind is logged, not fatal: the node's task (and its deposit) matters more than its page."""
    host, port = parse_listen(listen)
    async with trio.open_nursery() as nursery:
        try:
            bound = await nursery.start(serve_status, host, port, watch.document)
        except OSError as exc:
            logger.error("status page: cannot listen on %s (%s); running without it", listen, exc)
            return
        logger.info("status page at http://%s:%d/", host, bound)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fl-node status</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b00}.good{color:#070}
#curve{border:1px solid #ddd}
</style></head><body>
<h1>fl-node <span id="who"></span></h1>
<div id="task"></div>
<h2>Learning curve (consensus validation accuracy per round)</h2>
<svg id="curve" width="480" height="200"></svg>
<h2>Rounds</h2><table id="rounds"></table>
<h2>Members, rewards and slashes</h2><table id="members"></table>
<script>
const eth = w => (Number(BigInt(w) / 10n**12n) / 1e6).toFixed(4);
const short = a => a.slice(0, 8) + "…" + a.slice(-4);
const esc = s => String(s).replace(/[&<>"]/g, c => "&#" + c.charCodeAt(0) + ";");
function rows(el, head, body) {
  el.innerHTML = "<tr>" + head.map(h => "<th>" + h + "</th>").join("") + "</tr>" +
    body.map(r => "<tr>" + r.map(c => "<td>" + c + "</td>").join("") + "</tr>").join("");
}
function curve(points) {
  const svg = document.getElementById("curve"), w = 480, h = 200, pad = 30;
  if (!points.length) { svg.innerHTML = ""; return; }
  const n = Math.max(points.length, 2);
  const x = i => pad + i * (w - 2 * pad) / (n - 1), y = a => h - pad - a * (h - 2 * pad);
  const line = points.map((a, i) => x(i) + "," + y(a)).join(" ");
  svg.innerHTML = `<polyline fill="none" stroke="#36c" stroke-width="2" points="${line}"/>` +
    points.map((a, i) => `<circle cx="${x(i)}" cy="${y(a)}" r="3" fill="#36c"><title>round ${i + 1}: ${a}</title></circle>`).join("") +
    `<text x="4" y="${y(1) + 4}" font-size="10">1.0</text><text x="4" y="${y(0) + 4}" font-size="10">0.0</text>`;
}
async function refresh() {
  let s;
  try { s = await (await fetch("status.json")).json(); } catch (e) { return; }
  const n = s.node, t = s.task;
  document.getElementById("who").textContent = `${n.name} (${n.role}) — ${n.phase}, round ${n.round}` +
    (n.stake_wei === null ? "" : `, staked ${eth(n.stake_wei)} ETH`);
  document.getElementById("task").innerHTML = !t ? "no task yet" :
    `task <code>${esc(t.address)}</code>: ${esc(t.status)}${t.termination ? " (" + esc(t.termination) + ")" : ""}` +
    (t.params ? `, ${t.params.rounds} rounds of ${esc(t.params.model)} with ${esc(t.params.aggregator)}; ` +
      `escrow ${eth(t.params.escrow_wei)} ETH, left ${t.escrow_left_wei === null ? "?" : eth(t.escrow_left_wei)} ETH; ` +
      `rewards per round ${eth(t.params.worker_reward_per_round_wei)} (workers) + ${eth(t.params.validator_reward_per_round_wei)} (validators) ETH` : "");
  curve(s.rounds.filter(r => r.consensus_accuracy !== null).map(r => r.consensus_accuracy));
  rows(document.getElementById("rounds"),
    ["round", "phase", "updates", "commits", "reveals", "accepted", "rejected", "accuracy"],
    s.rounds.map(r => [r.round, esc(r.phase), r.submissions, r.commits, r.reveals,
      r.accepted.map(short).join(" "), `<span class="bad">${r.rejected.map(short).join(" ")}</span>`,
      r.consensus_accuracy === null ? "" : r.consensus_accuracy.toFixed(4)]));
  rows(document.getElementById("members"),
    ["member", "role", "stake / deposit ETH", "earned ETH", "slashed ETH", "withdrawn ETH"],
    s.members.map(m => [`<code>${esc(m.address)}</code>${m.left ? " (left)" : ""}`, esc(m.role), eth(m.stake_wei),
      `<span class="good">${eth(m.earned_wei)}</span>`,
      `<span class="${m.slashed_wei !== "0" ? "bad" : ""}">${eth(m.slashed_wei)}</span>`, eth(m.withdrawn_wei)]));
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
