"""Downloading a file whose SHA-256 we know: streamed, hashed, bounded, atomic.

The bytes go to a temporary file beside the destination and are renamed over it only
once their SHA-256 matches, so a failed, interrupted or corrupted download leaves
nothing in the cache that a later run could mistake for the real file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from protocol.errors import DatasetError

CHUNK = 1 << 16
TIMEOUT_S = 60.0  # per socket operation, not for the whole file


class DownloadError(DatasetError):
    """A download failed: unreachable, refused, too large or not the expected bytes."""


class Progress:
    """A one-line progress bar on a terminal stream, redrawn at most every 0.2 s."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done = 0
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.stream is not None and now - self._drawn >= 0.2:
            self._drawn = now
            self._draw()

    def finish(self) -> None:
        if self.stream is not None:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        assert self.stream is not None
        mib = self.done / (1 << 20)
        if self.total:
            share = min(self.done / self.total, 1.0)
            bar = "#" * int(share * 30)
            text = f"\r{self.label} [{bar:<30}] {share:6.1%} {mib:.1f} MiB"
        else:
            text = f"\r{self.label} {mib:.1f} MiB"
        self.stream.write(text)
        self.stream.flush()


def download(
    url: str,
    destination: Path,
    sha256: str,
    max_bytes: int,
    progress: TextIO | None = sys.stderr,
) -> Path:
    """Fetch ``url`` into ``destination`` if its SHA-256 is ``sha256``; DownloadError
    (nothing written) otherwise."""
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http:// and https:// URLs are downloaded")
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed or removed below
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
    )
    temporary = Path(handle.name)
    try:
        with handle:
            actual = _stream(url, handle, max_bytes, progress, destination.name)
        if actual != sha256:
            raise DownloadError(
                f"{url}: the downloaded bytes have SHA-256 {actual}, expected {sha256}; "
                "the mirror served a different or corrupted file, nothing was kept"
            )
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return destination


def _stream(url: str, out: object, max_bytes: int, stream: TextIO | None, label: str) -> str:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http(s) only
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > max_bytes:
                raise DownloadError(f"{url}: {total} bytes, over the {max_bytes}-byte bound")
            bar = Progress(f"downloading {label}", total, stream)
            received = 0
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise DownloadError(f"{url}: more than {max_bytes} bytes; stopped")
                digest.update(chunk)
                out.write(chunk)  # type: ignore[attr-defined]
                bar.advance(len(chunk))
            bar.finish()
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot download ({reason})") from exc
    return digest.hexdigest()
