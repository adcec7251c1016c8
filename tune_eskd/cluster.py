"""Joining a running Ray cluster (`--address`): fail fast on an address nothing answers on, and use Ray's token
authentication (Ray >= 2.59).

ray.init retries a dead address for minutes, so a plain TCP probe comes first. ray.init(address=HOST:PORT) never
turns token mode on by itself (only address="auto" does), so a driver with the cluster's token in
~/.ray/auth_token but without RAY_AUTH_MODE=token is refused, and ray.init retries for 20 s, printing
InvalidAuthToken each second, before a traceback. Here the driver turns token mode on when it finds a token (as
`ray start` does), asks the cluster's GCS once, and fails at once in one line otherwise.
"""
import contextlib
import logging
import os
import socket
import sys

from .errors import UsageError
from .ray_workers import RUNTIME_ENV

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


TOKEN_HELP = ("copy the head's ~/.ray/auth_token to this machine (or export RAY_AUTH_TOKEN=<token>; "
              "`ray get-auth-token` on the head prints it)")


def enable_token_auth_if_available() -> bool:
    """Turn on RAY_AUTH_MODE=token when a token is found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token) and the mode is not set explicitly; True when token mode is on. This is Ray's own rule
    for `ray start` and ray.init(address="auto")."""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    # Ray warns "Token authentication is enabled for this Ray cluster" each time: it is expected here.
    setup_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = setup_log.level
    setup_log.setLevel(logging.ERROR)
    try:
        return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        setup_log.setLevel(level)


@contextlib.contextmanager
def _quiet_stderr():
    """Hide the C++ GCS client's own warning line (written straight to fd 2) while it asks once."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_cluster(address: str) -> None:
    """Ask the cluster's GCS once (it answers in milliseconds, or refuses a missing or wrong token at once)."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError, RpcError

    try:
        with _quiet_stderr():
            GcsClient(address=address)
    except AuthenticationError:
        mode = os.environ.get("RAY_AUTH_MODE", "disabled")
        problem = ("the token this machine has is not the cluster's" if mode == "token"
                   else "this machine has no token for it")
        raise UsageError(f"the Ray cluster at {address} refused this driver ({problem}): {TOKEN_HELP}") from None
    except RpcError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address} ({str(exc).strip()}): check the address "
                         f"(`ray status` on the head prints it) or drop --address to run on this machine") from None


def connect_cluster(address: str) -> None:
    """ray.init on an existing cluster, or one UsageError line that names the fix. A no-op once connected."""
    import ray

    if ray.is_initialized():
        return
    enable_token_auth_if_available()
    if address != "auto" and not address.startswith("ray://"):  # Ray resolves those forms itself
        check_cluster(address)
    ray.init(address=address, logging_level=logging.WARNING, runtime_env=RUNTIME_ENV)
