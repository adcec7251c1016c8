"""Helpers shared by the sweep tests: a tiny space, reading trial results, the CLI in this process (one-line
errors) or in a subprocess (drivers a test can kill), and the checks on a driver's output."""
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

# A quick-preset variant small enough for tests: 2 teachers x 2 snapshots x 2 alphas + 1 CE baseline = 9 students.
TINY = ["subset=400", "teacher_epochs=2", "snapshots=[1, 2]", "epochs=2", "kd_epochs=[0, 1]",
        "teacher_width=0.5", "student_width=0.25", "alpha=[0.5, 0.9]"]
DRIVER_TIMEOUT = 900  # seconds for any one sweep or resume on two busy cores; waits are state-based, never sleeps


def tiny_overrides(extra: list[str] = ()) -> dict:
    from search_spaces import parse_overrides

    return parse_overrides(TINY + list(extra))


def set_flags(values) -> list[str]:
    return [arg for v in values for arg in ("--set", v)]


def sweep_args(storage, name, values, *extra) -> list[str]:
    """`tune-eskd sweep` arguments: the quick preset with `values` as --set overrides."""
    return ["sweep", "--space", "quick", *set_flags(values), "--storage", str(storage), "--name", name, *extra]


def trial_results(stage_path: str) -> dict[str, list[dict]]:
    """trial folder name -> its result.json rows."""
    out = {}
    for path in sorted(glob.glob(os.path.join(stage_path, "*", "result.json"))):
        with open(path) as f:
            out[os.path.basename(os.path.dirname(path))] = [json.loads(line) for line in f if line.strip()]
    return out


def trial_statuses(stage_path: str) -> dict[str, str]:
    from ray.tune import ExperimentAnalysis

    return {t.trial_id: t.status for t in ExperimentAnalysis(stage_path).trials}


def tree_digest(root) -> dict:
    """Every folder and file under root, with each file's sha256: what 'nothing changed on disk' compares."""
    out = {}
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        out[rel + "/"] = None
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.join(rel, f)] = hashlib.sha256(fh.read()).hexdigest()
    return out


# --- the CLI in this process ---------------------------------------------------------------------------------------

def expect_one_line_error(capsys, argv, *needles: str) -> str:
    """`tune-eskd ARGV` (the CLI's main, in this process) exits 2 with one stderr line holding every needle."""
    from tune_eskd.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        rc = exc.code
    captured = capsys.readouterr()
    lines = own_lines(captured.err)
    assert rc == 2, f"exit {rc}\n{captured.out}\n{captured.err}"
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("tune-eskd: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- the CLI in a subprocess ---------------------------------------------------------------------------------------

def cli(args: list[str], **kwargs) -> subprocess.Popen:
    """`tune-eskd ARGS` in its own process group (so a test can SIGKILL it and every Ray process it started)."""
    return subprocess.Popen([sys.executable, "-m", "tune_eskd.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


class Driver:
    """A `tune-eskd` subprocess (or a Python driver script run with ARGS) in its own process group, its output
    drained by a thread. Tests start them through the `drivers` fixture, which kills what is left at the end."""

    def __init__(self, args, script: str | None = None):
        if script is None:
            self.proc = cli(args)
        else:  # a Python driver script (the cluster tests), same process-group arrangement as cli()
            self.proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.killed = False
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill_group(self) -> None:
        """SIGKILL the driver's process group: the driver and every Ray process it started (they share it).

        Only once: after that the group is gone, and its id must not be signalled again (it could be reused)."""
        if self.killed:
            return
        self.killed = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group has ended
            pass
        self.proc.wait()
        self.reader.join(timeout=30)

    def finish(self, timeout: float = DRIVER_TIMEOUT) -> int:
        """Wait for the driver to exit by itself; then clear any Ray process left in its group."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"timed out after {timeout}s:\n{self.output[-5000:]}")
        self.reader.join(timeout=30)
        code = self.proc.returncode
        self.kill_group()
        return code

    def wait_for(self, predicate, what: str, timeout: float = DRIVER_TIMEOUT, poll: float = 0.05):
        """Poll `predicate` (state on disk) until it returns something truthy, while the driver runs."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"the driver ended (exit {self.proc.returncode}) before {what}:\n"
                                     f"{self.output[-5000:]}")
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output[-5000:]}")


def resume(drivers, exp) -> str:
    """`tune-eskd resume EXP` to the end (it must succeed); its output."""
    d = drivers(["resume", str(exp)])
    code = d.finish()
    assert code == 0, d.output[-5000:]
    return d.output


# A two-node Ray cluster in the driver's process group (ray.cluster_utils), running `tune-eskd ARGS` against it.
# With REMOVE_WORKER_NODE_BEFORE_EPOCH=N it removes the worker node once a student on it has reported an epoch
# below N, and prints which node and trial. RAY_AUTH_MODE is pinned: with a token in ~/.ray/auth_token (Ray writes
# one) and no explicit mode, the driver joining turns token mode on (Ray's rule for `ray start`) while
# ray.cluster_utils' nodes may run without it, and every trial's actor is refused.
CLUSTER_DRIVER = """
import glob, json, os, sys, threading, time
os.environ["RAY_AUTH_MODE"] = "disabled"
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
students = os.path.join(sys.argv[sys.argv.index("--storage") + 1], sys.argv[sys.argv.index("--name") + 1],
                        "students")


def remove_worker_node_mid_trial(epochs):
    # once a student on the worker node has reported an epoch, and has more to go, take the node away
    while True:
        for path in glob.glob(os.path.join(students, "*", "result.json")):
            with open(path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            if rows and rows[-1]["node_id"] == worker.node_id and rows[-1]["epoch"] < epochs:
                cluster.remove_node(worker)
                print(f"REMOVED worker node {worker.node_id} while {os.path.basename(os.path.dirname(path))} "
                      f"was at epoch {rows[-1]['epoch']}", flush=True)
                return
        time.sleep(0.05)


if "REMOVE_WORKER_NODE_BEFORE_EPOCH" in os.environ:
    threading.Thread(target=remove_worker_node_mid_trial, args=(int(os.environ["REMOVE_WORKER_NODE_BEFORE_EPOCH"]),),
                     daemon=True).start()
from tune_eskd.cli import main
import ray

code = main(sys.argv[1:] + ["--address", cluster.address])
ray.shutdown()  # disconnect the driver before the nodes go
cluster.shutdown()
sys.exit(code)
"""


# --- a driver's output ----------------------------------------------------------------------------------------------

# A line a Ray worker printed, forwarded to the driver with Ray's "(name pid=N, ip=...)" prefix (maybe coloured).
RAY_WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)*\([^()]*\bpid=\d+[^()]*\)")


def own_lines(text: str) -> list[str]:
    """The non-blank lines of captured output that are not a Ray worker's. In-process CLI calls share the test
    session's Ray instance, whose idle workers, stopped by Ray's SIGTERM, may print its SystemExit traceback
    (each line prefixed `(train_student pid=N)`) into whatever the current test captures."""
    return [line for line in text.splitlines() if line.strip() and not RAY_WORKER_LINE.match(line)]


# Ray Tune deletes a checkpoint beyond num_to_keep before it saves the experiment state that stops naming it. A
# driver killed in between leaves a state naming a deleted checkpoint; after the resume, Tune's next checkpoint
# tries to delete it again and logs "Error handling checkpoint ... FileNotFoundError: Path not found". The new
# checkpoint is registered before that delete, so nothing is lost (the fault tests' metrics checks prove it); it
# is the one traceback a resume may print (RELIABILITY.md).
RAY_STALE_CHECKPOINT = re.compile(r"Error handling checkpoint.*?Traceback \(most recent call last\):.*?"
                                  r"_delete_fs_path.*?FileNotFoundError: Path not found: \([^\n]*checkpoint_\d+\)", re.S)


def assert_no_traceback(output: str) -> None:
    """No traceback from the driver. A Ray worker may print its own SIGTERM SystemExit traceback while Ray stops
    it (Ray's handler firing inside a weakref callback): those lines carry the worker's "(train_... pid=N)"
    prefix and are Ray's shutdown, not a tune-eskd error (RELIABILITY.md's Ctrl-C row)."""
    driver = "\n".join(line for line in output.splitlines() if not RAY_WORKER_LINE.match(line))
    assert "Traceback" not in RAY_STALE_CHECKPOINT.sub("<Ray Tune: stale checkpoint already deleted>", driver), \
        output[-5000:]


def store_teacher_snapshots(store, teacher_run) -> None:
    """Put the session teacher's snapshots (conftest's teacher_run) into `store`, as stage 1 would have."""
    import shutil

    c = teacher_run.cfg
    for epoch in c.snapshots:
        os.makedirs(os.path.dirname(store.path(c.teacher_hash(), epoch)), exist_ok=True)
        for ext in (".pt", ".json"):
            shutil.copy(os.path.join(teacher_run.snapshot_dir, f"epoch_{epoch:03d}{ext}"),
                        store.path(c.teacher_hash(), epoch)[:-3] + ext)


@contextmanager
def small_mount(path, size="32m"):
    """A real tmpfs of `size` at `path` (root only), to fill up or remount read-only."""
    os.makedirs(path)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
