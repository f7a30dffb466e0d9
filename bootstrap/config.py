"""The bootstrap peer's TOML config.

```toml
[network]
key_file = "bootstrap.key"            # identity; relative paths are relative to this file
listen = ["/ip4/0.0.0.0/tcp/4001"]    # optional; default /ip4/127.0.0.1/tcp/4001
```
Every error names the file and the key, and says what would be accepted.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.host import HostConfig, HostConfigError

__all__ = ["DEFAULT_LISTEN", "BootstrapConfig", "ConfigError", "load_bootstrap_config"]

DEFAULT_LISTEN = ("/ip4/127.0.0.1/tcp/4001",)
_NETWORK_KEYS = {"key_file", "listen"}


class ConfigError(ValueError):
    """A config file is missing, not TOML, or has a wrong key; the text names file and key."""


@dataclass(frozen=True)
class BootstrapConfig:
    path: Path
    host: HostConfig


def load_bootstrap_config(path: Path) -> BootstrapConfig:
    path = Path(path)
    try:
        with path.open("rb") as config_file:
            document = tomllib.load(config_file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc

    loose_keys = sorted(k for k, v in document.items() if not isinstance(v, dict))
    if loose_keys:
        raise ConfigError(
            f"{path}: key(s) {loose_keys} are outside any section; put them under [network]"
        )
    unknown_sections = sorted(set(document) - {"network"})
    if unknown_sections:
        raise ConfigError(
            f"{path}: unknown section(s) {unknown_sections}; a bootstrap config has only [network]"
        )
    network = document.get("network")
    if not isinstance(network, dict):
        raise ConfigError(f"{path}: missing section [network] (with key_file and listen)")
    unknown_keys = sorted(set(network) - _NETWORK_KEYS)
    if unknown_keys:
        raise ConfigError(
            f"{path}: [network] has unknown key(s) {unknown_keys}; allowed: {sorted(_NETWORK_KEYS)}"
        )

    key_file = network.get("key_file")
    if not isinstance(key_file, str) or not key_file:
        raise ConfigError(
            f"{path}: [network] key_file must be a non-empty string path to the identity key, "
            f"got {_describe(key_file)}"
        )
    key_path = Path(key_file).expanduser()
    if not key_path.is_absolute():
        key_path = path.parent / key_path

    listen = network.get("listen", list(DEFAULT_LISTEN))
    if not isinstance(listen, list) or not listen or not all(isinstance(a, str) for a in listen):
        raise ConfigError(
            f"{path}: [network] listen must be a non-empty list of multiaddr strings such as "
            f'["/ip4/0.0.0.0/tcp/4001"], got {_describe(listen)}'
        )
    try:
        host = HostConfig(key_path=key_path, listen_addrs=tuple(listen))
    except HostConfigError as exc:
        raise ConfigError(f"{path}: [network] listen: {exc}") from exc
    return BootstrapConfig(path=path, host=host)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
