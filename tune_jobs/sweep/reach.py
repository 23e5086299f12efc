"""Servers a command talks to (a Ray cluster's `--address`, an MLflow `--mlflow http://...`), probed before anything
starts, within their own timeout (`LORA_SWEEP_CONNECT_TIMEOUT` seconds, default 15): an address nothing answers is
one line and exit 2, not minutes of the client library's own retries."""

from __future__ import annotations

import math
import os
import socket

from record.errors import InputError

TIMEOUT_ENV = "LORA_SWEEP_CONNECT_TIMEOUT"
DEFAULT_TIMEOUT_S = 15.0
RAY_CLIENT_PORT = 10001  # ray://host (Ray Client) without a port


def connect_timeout() -> float:
    """Seconds to wait for a server to answer (`LORA_SWEEP_CONNECT_TIMEOUT`, default 15)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise InputError(TIMEOUT_ENV, "must be a finite number of seconds > 0", got=raw,
                         allowed="e.g. 15 (the default), or unset it")
    return value


def check_reachable(host: str, port: int, field: str, got: str, allowed: str, timeout: float | None = None) -> None:
    """Open (and close) a TCP connection to host:port; InputError naming `field` when nothing answers in time."""
    timeout = connect_timeout() if timeout is None else timeout
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.timeout:
        why = f"no answer within {timeout:g} s ({TIMEOUT_ENV} to wait longer)"
    except OSError as err:  # refused, no route, unknown host
        why = err.strerror or type(err).__name__
    raise InputError(field, f"nothing answers at {host}:{port} ({why})", got=got, allowed=allowed) from None


def _host_port(text: str) -> tuple[str, int | None]:
    """'host:port', '[::1]:port' or 'host' -> (host, port or None); ValueError for a port that is not a number."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:] else None
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep else (text, None)


RAY_ALLOWED = ("the head node's GCS address host:port (`ray start --head` prints it; port 6379 by default), "
               "ray://host:10001 for Ray Client, or leave --address out for a local Ray; check that the cluster is up")


def check_ray_address(address: str | None, field: str = "--address") -> None:
    """Probe the Ray cluster an address names (host:port of the GCS, or ray://host[:port]) before `ray.init`, which
    would otherwise retry for minutes. `auto` and `local` (and no address) are left to Ray: they start nothing
    remote or fail at once."""
    if not address or address in ("auto", "local"):
        return
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        return  # not a form ray.init takes; Ray's own error is one line
    target = rest if sep else address
    target = target.split("/", 1)[0]
    try:
        host, port = _host_port(target)
    except ValueError:
        raise InputError(field, "the port is not a number", got=address, allowed=RAY_ALLOWED) from None
    if port is None and not sep:
        raise InputError(field, "no port", got=address, allowed=RAY_ALLOWED)
    if not host:
        raise InputError(field, "no host", got=address, allowed=RAY_ALLOWED)
    check_reachable(host, port or RAY_CLIENT_PORT, field, address, RAY_ALLOWED)


def check_http_server(uri: str, field: str, allowed: str) -> None:
    """Probe the host:port of an http(s) URI (port 80/443 unless given) within the connect timeout."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError(field, "the port is not a number", got=uri, allowed=allowed) from None
    check_reachable(parts.hostname, port, field, uri, allowed)
