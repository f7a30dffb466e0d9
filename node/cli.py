"""The ``fl-node`` command line: one function per subcommand, registered in ``main``.

Each subcommand (``fl-node --help`` lists them) has an ``add_<name>_command`` that adds
its parser and points ``func`` at a handler that takes the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from node.config import NodeConfig

__all__ = [
    "add_bootstrap_command",
    "add_config_command",
    "add_round_diagram_command",
    "add_run_command",
    "build_parser",
    "load_node_config",
    "main",
]

EXIT_CONFIG_ERROR = 2


def add_config_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    summary: str,
    description: str,
    config_help: str = "node TOML config (see node.toml)",
) -> argparse.ArgumentParser:
    """The parser of a subcommand that reads the TOML config named by --config."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=description
    )
    parser.add_argument("--config", required=True, type=Path, help=config_help)
    return parser


def load_node_config(path: Path, command: str) -> NodeConfig | None:
    """The node config at ``path``; None once the one line saying why not is printed
    (the caller exits with EXIT_CONFIG_ERROR)."""
    from node.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"fl-node {command}: {exc}", file=sys.stderr)
        return None


def add_bootstrap_command(subparsers: argparse._SubParsersAction) -> None:
    parser = add_config_command(
        subparsers,
        "bootstrap",
        "run a bootstrap peer (Kademlia DHT server) and print its multiaddr",
        "Run a bootstrap peer: a DHT server that other nodes dial first to find each other. "
        "Prints its full multiaddrs (ending in /p2p/<peer id>), one per line, then runs "
        "until SIGINT or SIGTERM.",
        config_help="bootstrap TOML config file",
    )
    parser.set_defaults(func=run_bootstrap_command)


def run_bootstrap_command(args: argparse.Namespace) -> int:
    from bootstrap.config import ConfigError, load_bootstrap_config
    from bootstrap.server import run_bootstrap
    from node.host import HostConfigError, IdentityError

    try:
        config = load_bootstrap_config(args.config)
        trio.run(run_bootstrap, config)
    except (ConfigError, HostConfigError, IdentityError) as exc:
        print(f"fl-node bootstrap: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return 0


def add_localnet_command(subparsers: argparse._SubParsersAction) -> None:
    from node.localnet.command import add_arguments, run_command

    parser = subparsers.add_parser(
        "localnet",
        help="run a whole network on this machine (anvil, bootstrap, requester, workers, validators)",
        description=(
            "Start anvil, deploy the contracts, start a bootstrap node, a requester, workers and "
            "validators as separate processes, show a table per round, and write results.json "
            "and plots to the output folder. Stops everything it started on exit."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def add_run_command(subparsers: argparse._SubParsersAction) -> None:
    parser = add_config_command(
        subparsers,
        "run",
        "run one node (requester, worker or validator) from a TOML config",
        "Run one long-running node in the role its config names: register, join (or "
        "create) a task and take part in its rounds until the task is over. Stops cleanly "
        "on SIGINT or SIGTERM; run it again with the same data_dir to resume.",
    )
    parser.set_defaults(func=run_node_command)


def run_node_command(args: argparse.Namespace) -> int:
    from node.blocks import BlockStoreError
    from node.chain import ChainError
    from node.chain.errors import TransactionCannotSucceed
    from node.host import HostConfigError, IdentityError
    from node.runtime.driver import NodeStopped
    from node.runtime.keys import KeyFileError
    from node.runtime.node import NodeConfigError, run_node_until_signal

    config_errors = (
        NodeConfigError, HostConfigError, IdentityError, KeyFileError, NodeStopped,
        TransactionCannotSucceed,  # e.g. an unfunded account: fix it before running again
    )
    config = load_node_config(args.config, "run")
    if config is None:
        return EXIT_CONFIG_ERROR
    try:
        logging.getLogger().setLevel(config.node.log_level.upper())
        trio.run(run_node_until_signal, config)
    except Exception as raised:
        problem = sole_error(raised)  # raised inside the node's nurseries: wrapped in groups
        if isinstance(problem, config_errors):
            print(f"fl-node run: {problem}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        if isinstance(problem, (ChainError, BlockStoreError)):
            print(f"fl-node run: {problem}", file=sys.stderr)
            return 1
        raise
    return 0


def add_round_diagram_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "round-diagram",
        help="print the round's state diagram (Mermaid), as docs/round.md holds it",
        description=(
            "Generate the round's state diagram from the state machine's transition table "
            "(protocol/state/phases.py); --write docs/round.md refreshes the docs."
        ),
    )
    parser.add_argument("--write", type=Path, help="write the document to this file")
    parser.set_defaults(func=run_round_diagram_command)


def run_round_diagram_command(args: argparse.Namespace) -> int:
    from protocol.state.diagram import round_document

    document = round_document()
    if args.write is None:
        print(document, end="")
    else:
        args.write.write_text(document, encoding="utf-8")
    return 0


def sole_error(raised: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (else `raised`)."""
    while isinstance(raised, BaseExceptionGroup) and len(raised.exceptions) == 1:
        raised = raised.exceptions[0]
    return raised


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fl-node", description="peer-to-peer federated learning node"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of fl-node's own log output on stderr (default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_bootstrap_command(subparsers)
    add_run_command(subparsers)
    add_localnet_command(subparsers)
    from node.export import add_export_command

    add_export_command(subparsers)
    add_round_diagram_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
