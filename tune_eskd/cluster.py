"""Fail fast on a Ray cluster address that nothing answers on: ray.init retries a dead address for minutes."""
import socket

from .errors import UsageError

PROBE_SECONDS = 3


def check_reachable(address: str | None, fix: str) -> None:
    """Refuse an --address HOST:PORT (or ray://HOST:PORT) on which no process accepts a connection. `fix` says
    what the user can do instead. "auto" and other forms are left to Ray, which resolves them itself."""
    if not address:
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UsageError(f"no Ray cluster answers at {address} ({reason} within {PROBE_SECONDS}s): {fix}") from None
