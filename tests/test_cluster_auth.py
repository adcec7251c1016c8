"""The README's cluster steps, run as written on Ray's token authentication: a head and a worker started by
`ray start` on loopback, then `tune-eskd sweep --address`. The driver finds the token in ~/.ray/auth_token by
itself; without one it fails at once in one line and writes nothing."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweep_helpers import TINY, trial_results

RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _clean_env(home: str, **extra) -> dict:
    """This process may have set RAY_AUTH_MODE for its own local Ray: start each command from a clean slate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    return {**env, "HOME": home, **extra}


def _node_ports() -> list[str]:
    agent, grpc, runtime_env, metrics = _free_ports(4)
    return ["--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc),
            "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics)]


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start --block` in its own process group, so that stopping it stops exactly its Ray processes."""
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *_node_ports(),
                             *args], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """What `ray stop` does, for this node only: SIGTERM its group, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the `ray start` process is gone; its daemons may still be finishing
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


def _wait_nodes(address: str, env: dict, count: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ray start ended:\n{log.read_text()}")
        out = subprocess.run([RAY, "status", "--address", address], env={**env, "RAY_AUTH_MODE": "token"},
                             capture_output=True, text=True).stdout
        if out.count("node_") >= count:
            return
        time.sleep(2)
    raise AssertionError(f"the cluster did not reach {count} nodes:\n{log.read_text()}")


@pytest.fixture(scope="module")
def head():
    """The head: `ray get-auth-token --generate` then `ray start --head` (which picks the token up by itself)."""
    root = tempfile.mkdtemp(prefix="te-", dir="/tmp")  # short: Ray's socket paths live under its temp dir
    home = os.path.join(root, "home")
    os.makedirs(home)
    env = _clean_env(home)
    token = subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    port, client_port = _free_ports(2)
    address = f"127.0.0.1:{port}"
    log = Path(root, "head.log")
    proc = _start(["--head", "--port", str(port), "--include-dashboard", "false",
                   "--ray-client-server-port", str(client_port), "--temp-dir", os.path.join(root, "ray")], env, log)
    nodes = [proc]
    try:
        _wait_nodes(address, env, 1, proc, log)
        yield {"address": address, "home": home, "token": token, "root": root, "nodes": nodes}
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(root, ignore_errors=True)


def _sweep(head: dict, storage: Path, name: str, home: str) -> subprocess.CompletedProcess:
    flags = [arg for v in TINY for arg in ("--set", v)]
    return subprocess.run([sys.executable, "-m", "tune_eskd.cli", "sweep", "--space", "quick", *flags,
                           "--address", head["address"], "--storage", str(storage), "--name", name],
                          env=_clean_env(home), capture_output=True, text=True, timeout=900, start_new_session=True)


@pytest.mark.slow  # starting a head costs 20-40 s on 2 busy cores
def test_driver_without_the_token_fails_at_once_and_writes_nothing(head, tmp_path):
    """Before: InvalidAuthToken once a second for 20 s, a traceback, and sweep.json already written."""
    elsewhere = tmp_path / "home-without-token"
    elsewhere.mkdir()
    done = _sweep(head, tmp_path / "runs", "refused", str(elsewhere))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refused this driver" in lines[0] and "auth_token" in lines[0], done.stderr
    assert "InvalidAuthToken" not in done.stdout + done.stderr
    assert not (tmp_path / "runs" / "refused").exists()


@pytest.mark.slow
def test_sweep_on_head_and_worker_started_as_the_readme_says(head, tmp_path):
    """Worker: RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<token> ray start --address; the driver, run with the token in
    ~/.ray/auth_token only (as on the head), sets the mode itself and spreads its trials over both nodes."""
    worker_home = os.path.join(head["root"], "worker-home")
    os.makedirs(worker_home)
    env = _clean_env(worker_home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"])
    log = Path(head["root"], "worker.log")
    worker = _start(["--address", head["address"]], env, log)
    head["nodes"].append(worker)
    _wait_nodes(head["address"], _clean_env(head["home"]), 2, worker, log)

    done = _sweep(head, tmp_path, "two-nodes", head["home"])
    assert done.returncode == 0, done.stdout + done.stderr
    nodes = {rows[-1]["node_id"] for stage in ("teachers", "students")
             for rows in trial_results(str(tmp_path / "two-nodes" / stage)).values()}
    assert len(nodes) == 2, nodes
