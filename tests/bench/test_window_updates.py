"""bench.window_updates: what it counts is the window updates each policy sends, over real
hosts; ours announce half a window at once, upstream's every read."""

from __future__ import annotations

from pathlib import Path

import trio

from bench import window_updates


def test_gossip_sized_reads_no_longer_send_an_update_each(tmp_path: Path) -> None:
    messages = 200
    results = trio.run(window_updates.run, messages, 300, 2, 1, tmp_path)
    ours, upstream = results["gossip ours"][0], results["gossip upstream"][0]
    assert upstream.updates >= 2 * messages  # the length byte, then the body: one each
    assert ours.updates <= 2  # 60 KB read, a quarter of the first window: nothing, or one
    blob_ours, blob_upstream = results["blob ours"][0], results["blob upstream"][0]
    # 2 MB through a first window of 256 KiB: the writer needed updates (it finished),
    # and fewer than upstream's one per read
    assert 1 <= blob_ours.updates < blob_upstream.updates
