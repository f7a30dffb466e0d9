"""The multi-process localnet beyond loopback: a bootstrap node, a requester, 2 workers and a
validator, each an `fl-node` process in its own Linux network namespace with its own address
on a bridge, as on separate machines; anvil runs in this namespace on the bridge's subnet.

127.0.0.1 inside a node's namespace is that node's alone, so the task can only terminate if
the nodes listen, announce, dial and discover each other by their bridge addresses. Some nodes
listen on 0.0.0.0, as servers usually do, and must still announce an address peers can dial
(a wildcard announced as such left a worker's update unfetched and the worker unpaid). The test
also reads each process's live TCP connections from /proc and checks that the peers talked
to each other over those addresses.

Needs root and `ip netns`; the namespaces, the bridge and the veth pairs get names unique to
the run and are deleted at the end, also on failure.
"""

from __future__ import annotations

import io
import ipaddress
import random
import shutil
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pytest
from eth_account import Account

from node.anvil import AnvilNotFound, find_anvil
from node.chain.types import Termination
from node.datasets import default_data_root, mnist_available
from node.localnet.launcher import Localnet, LocalnetOptions
from node.localnet.scenario import Scenario

WORKERS = 2
VALIDATORS = 1
NODE_NAMES = (
    "bootstrap",
    "requester",
    *(f"worker-{i}" for i in range(WORKERS)),
    *(f"validator-{i}" for i in range(VALIDATORS)),
)
# Listen on every interface, as a server usually does; the others listen on their address.
WILDCARD_LISTENERS = ("bootstrap", "worker-1", "validator-0")
RUN_TIMEOUT_S = 480.0  # a hang guard for the whole task, not a speed requirement
TASK = {
    "training_seconds": 150,
    "commit_seconds": 90,
    "reveal_seconds": 60,
    "validation_samples": 200,
    # This test checks the network and the money, not the learning: no qualification bar,
    # and top-k pays every accepted worker.
    "qualification_threshold": 0.0,
    "reward_policy": "topk",
    "top_k": WORKERS,
}


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.77.0.0/16 that no route of this namespace touches."""
    routes = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True
    ).stdout
    used = []
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unicast"):
            word = line.split()[1]
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue  # "default" and the like
    candidates = [ipaddress.IPv4Network(f"10.77.{n}.0/24") for n in range(1, 255)]
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
            return subnet
    raise RuntimeError("every 10.77.x.0/24 is routed already")


@dataclass
class Bridge:
    """A hub namespace holding a bridge; one namespace per node joined to it by a veth pair,
    and a veth pair from this namespace (the chain's side) to the bridge."""

    subnet: ipaddress.IPv4Network
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    namespaces: list[str] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)  # node name -> its address

    @property
    def hub(self) -> str:
        return f"fl-{self.tag}-hub"

    @property
    def root_link(self) -> str:
        return f"fl{self.tag}"  # an interface of this namespace: the name must be unique here

    @property
    def chain_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def namespace(self, name: str) -> str:
        return f"fl-{self.tag}-{name}"

    def create(self, names: tuple[str, ...]) -> None:
        _ip("netns", "add", self.hub)
        self.namespaces.append(self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        prefix = self.subnet.prefixlen
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "uplink", "netns", self.hub)
        _ip("addr", "add", f"{self.chain_address}/{prefix}", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")
        _ip("-n", self.hub, "link", "set", "uplink", "master", "br0", "up")
        for index, name in enumerate(names):
            namespace = self.namespace(name)
            _ip("netns", "add", namespace)
            self.namespaces.append(namespace)
            address = str(self.subnet.network_address + 2 + index)
            port = f"p{index}"
            _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", namespace)
            _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            self.addresses[name] = address

    def remove(self) -> None:
        """Delete every namespace (their veth ends and the bridge go with them)."""
        for namespace in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.root_link], capture_output=True, timeout=30)
        self.namespaces.clear()


class BridgedLocalnet(Localnet):
    """The launcher's localnet with each node in its namespace of `bridge`, listening on its
    bridge address or on every interface, and anvil on this namespace's bridge address."""

    def __init__(self, options: LocalnetOptions, bridge: Bridge, out: TextIO) -> None:
        scenario = Scenario(source="<no scenario>").resolve(WORKERS, VALIDATORS)
        super().__init__(options, scenario, out)
        self.bridge = bridge
        self.chain_host = bridge.chain_address

    def listen_addrs(self, name: str) -> list[str]:
        if name in WILDCARD_LISTENERS:
            return ["/ip4/0.0.0.0/tcp/0"]
        return [f"/ip4/{self.bridge.addresses[name]}/tcp/0"]

    def node_argv(self, name: str, *args: str) -> list[str]:
        namespace = self.bridge.namespace(name)
        return ["ip", "netns", "exec", namespace, *super().node_argv(name, *args)]


def _established(pid: int) -> set[tuple[str, str]]:
    """(local ip, remote ip) of the established IPv4 TCP connections in `pid`'s namespace."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()  # the process has exited
    found = set()
    for line in lines:
        fields = line.split()
        if fields[3] != "01":  # TCP_ESTABLISHED
            continue
        local, remote = (
            socket.inet_ntoa(struct.pack("<I", int(f.split(":")[0], 16))) for f in fields[1:3]
        )
        found.add((local, remote))
    return found


class ConnectionWatch:
    """Samples every node process's established connections once a second, in a thread."""

    def __init__(self, localnet: Localnet) -> None:
        self.localnet = localnet
        self.seen: dict[str, set[tuple[str, str]]] = {name: set() for name in NODE_NAMES}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        for name, process in list(self.localnet.processes.processes.items()):
            pid = process.pid
            if pid is not None and process.running:
                self.seen[name] |= _established(pid)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    if shutil.which("ip") is None:
        pytest.skip("needs the `ip` command (iproute2) to create network namespaces")
    probe = f"fl-probe-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(
            f"`ip netns add` is not permitted here ({done.stderr.strip() or done.returncode}); "
            "this test needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        )
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    lab = Bridge(_free_subnet())
    try:
        lab.create(NODE_NAMES)
        yield lab
    finally:
        lab.remove()


@pytest.fixture
def data_root() -> Path:
    try:
        find_anvil()
    except AnvilNotFound as exc:
        pytest.skip(f"needs the npm anvil binary: {exc}")
    root = default_data_root()
    if not (mnist_available(root, "train") and mnist_available(root, "test")):
        pytest.skip(f"MNIST not found under {root}; set FL_NODE_DATA_ROOT")
    return root


@pytest.mark.anvil
def test_nodes_in_separate_network_namespaces_finish_a_task_and_get_paid(
    tmp_path: Path, bridge: Bridge, data_root: Path
) -> None:
    options = LocalnetOptions(
        output=tmp_path / "out",
        data_root=data_root,
        workers=WORKERS,
        validators=VALIDATORS,
        rounds=1,
        max_samples=1000,
        model="mnist_2nn",
        timeout=RUN_TIMEOUT_S,
        poll_interval=0.5,
        task_overrides=dict(TASK),
    )
    transcript = io.StringIO()
    localnet = BridgedLocalnet(options, bridge, transcript)
    try:
        localnet.prepare_output()
        localnet.start_chain()
        localnet.plan_nodes()
        bootstrap = localnet.start_bootstrap()
        localnet.write_configs(bootstrap)
        view = localnet.open_view()
        with ConnectionWatch(localnet) as watch:
            localnet.start_nodes()
            localnet.watch(view)
        assert view.task is not None and localnet.reader is not None
        # What the chain holds for each party once the nodes withdrew and stopped.
        held = {
            plan.name: localnet.reader.credited_balance(view.task, address)
            + view.tracker.withdrawn.get(address, 0)
            for plan in localnet.plans.values()
            for address in [Account.from_key(plan.private_key).address]
        }
    except Exception as exc:
        logs = "\n".join(
            f"--- {p.name}:\n{p.tail(25)}" for p in localnet.processes.processes.values()
        )
        raise AssertionError(f"{exc}\n{transcript.getvalue()[-3000:]}\n{logs}") from exc
    finally:
        localnet.stop()
    report = transcript.getvalue()

    # The bootstrap node, listening on 0.0.0.0, printed its bridge address for the others.
    assert bootstrap and all(
        a.startswith(f"/ip4/{bridge.addresses['bootstrap']}/tcp/") for a in bootstrap
    ), bootstrap

    # The task ran its round and ended by the round limit; every honest party was paid.
    tracker = view.tracker
    assert tracker.termination == Termination.ROUND_LIMIT, report
    (record,) = tracker.finalized_rounds()
    for plan in localnet.plans.values():
        name, address = plan.name, Account.from_key(plan.private_key).address
        if plan.role == "requester":
            continue
        outcome = (record.workers if plan.role == "worker" else record.validators).get(address)
        assert outcome is not None, (name, record)
        assert outcome.payout > 0 and outcome.slash == 0, (name, outcome)
        assert held[name] >= outcome.payout, (name, held, outcome)

    # The nodes reached each other over the bridge: no peer connection over loopback, and
    # every pair of them connected directly at some point (discovery's target of 8 peers
    # covers this whole task), each also to the bootstrap node.
    by_address = {address: name for name, address in bridge.addresses.items()}
    peers: dict[str, set[str]] = {}
    for name, connections in watch.seen.items():
        assert not [c for c in connections if c[1].startswith("127.")], (name, connections)
        assert all(local == bridge.addresses[name] for local, _ in connections), (name, connections)
        peers[name] = {
            by_address[remote] for _, remote in connections if remote != bridge.chain_address
        }
    for name in NODE_NAMES[1:]:
        assert peers[name] == set(NODE_NAMES) - {name}, (name, peers)
