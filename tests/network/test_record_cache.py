"""Signed peer records are verified once per distinct envelope (node.libp2p_compat)."""

from __future__ import annotations

import importlib

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import Envelope, unmarshal_envelope
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerstore import create_signed_peer_record
from multiaddr import Multiaddr

from node import libp2p_compat
from node.libp2p_compat import consume_envelope_once, install_record_cache

DOMAIN = "libp2p-peer-record"


def signed_record(port: int) -> bytes:
    keys = create_new_key_pair()
    peer = PeerID.from_pubkey(keys.public_key)
    envelope = create_signed_peer_record(
        peer, [Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")], keys.private_key
    )
    return bytes(envelope.marshal_envelope())


def forged(data: bytes) -> bytes:
    """The same envelope with its last signature byte flipped."""
    envelope = unmarshal_envelope(data)
    signature = bytearray(envelope.signature)
    signature[-1] ^= 1
    return bytes(Envelope(envelope.public_key, envelope.payload_type, envelope.raw_payload,
                          bytes(signature)).marshal_envelope())


def test_a_verified_record_is_checked_once_and_a_forged_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[bytes] = []
    upstream = libp2p_compat._upstream_consume_envelope

    def counting(data: bytes, domain: str) -> object:
        checked.append(data)
        return upstream(data, domain)

    monkeypatch.setattr(libp2p_compat, "_upstream_consume_envelope", counting)
    monkeypatch.setattr(libp2p_compat, "_verified_envelopes", type(libp2p_compat._verified_envelopes)())
    good = signed_record(4001)
    first = consume_envelope_once(good, DOMAIN)
    assert consume_envelope_once(good, DOMAIN) is first
    assert checked == [good]
    bad = forged(good)
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - upstream raises ValueError or its own
            consume_envelope_once(bad, DOMAIN)
    assert checked == [good, bad, bad]
    with pytest.raises(Exception):  # noqa: B017
        consume_envelope_once(good, "another-domain")  # the domain is part of what is signed


def test_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libp2p_compat, "RECORD_CACHE_SIZE", 3)
    monkeypatch.setattr(libp2p_compat, "_verified_envelopes", type(libp2p_compat._verified_envelopes)())
    records = [signed_record(4000 + i) for i in range(5)]
    for record in records:
        consume_envelope_once(record, DOMAIN)
    assert [key[1] for key in libp2p_compat._verified_envelopes] == records[2:]


def test_installed_where_py_libp2p_verifies_records() -> None:
    install_record_cache()
    for name in libp2p_compat._ENVELOPE_USERS:
        module = importlib.import_module(name)
        assert module.consume_envelope is consume_envelope_once, name
