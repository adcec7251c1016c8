"""Everyday commands on experiments, run from outside their driver: `stop` a sweep running in the background,
`rm` an experiment, and `gc` the shared snapshots and soft labels that no experiment on a storage references.

While a sweep or resume runs, its driver records itself in STORAGE/NAME/driver.json (pid, host, and the
process's start time, so that a pid reused after the driver died is not mistaken for it). `stop` sends that pid
SIGINT, exactly what Ctrl-C does; `rm` refuses to delete an experiment whose driver still runs.
"""
import json
import os
import signal
import socket
import time
from contextlib import contextmanager

from pyarrow import fs as pafs

from .errors import UsageError
from .blobs import filesystem, read_bytes, write_bytes
from .record import SWEEP_FILE, Experiment

DRIVER_FILE = "driver.json"
STOP_WAIT_SECONDS = 120  # Tune saves every trial's state on SIGINT; a big sweep on slow storage takes a while


def _process_start(pid: int) -> str | None:
    """A Linux process's start time (clock ticks since boot; /proc/PID/stat field 22), or None when the process
    is gone or is a zombie. Elsewhere: "" for a live pid, None otherwise."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name in (...) may hold spaces
        return None if fields[0] == "Z" else fields[19]
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""


@contextmanager
def driver_record(exp: Experiment):
    """Record this process as `exp`'s driver while the block runs."""
    fsys, path = filesystem(f"{exp.path}/{DRIVER_FILE}")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_bytes(fsys, path, json.dumps(record).encode())
    try:
        yield
    finally:
        try:
            fsys.delete_file(path)
        except OSError:  # already gone (`rm`), or the storage turned read-only: a stale record reads as not running
            pass


def running_driver(exp: Experiment) -> dict | None:
    """The driver recorded for `exp` if it may still run: always when it ran on another host (this machine cannot
    tell), else only when its pid is alive with the recorded start time."""
    fsys, path = filesystem(f"{exp.path}/{DRIVER_FILE}")
    try:
        record = json.loads(read_bytes(fsys, path))
        pid, host = int(record["pid"]), str(record["host"])
    except (OSError, ValueError, KeyError, TypeError):  # no record, or a damaged one: no driver we can reach
        return None
    if host != socket.gethostname():
        return record
    start = _process_start(pid)
    return record if start is not None and start == (record.get("start") or start) else None


def stop(path: str) -> int:
    """Interrupt the experiment's running driver as Ctrl-C does, and wait until it has saved its state."""
    exp = Experiment.at(path)
    driver = running_driver(exp)
    if driver is None:
        raise UsageError(f"no driver is running experiment {exp.path}: nothing to stop "
                         f"(`tune-eskd resume {exp.path}` continues it)")
    host, pid = socket.gethostname(), int(driver["pid"])
    if driver["host"] != host:
        raise UsageError(f"the driver of {exp.path} runs on host {driver['host']} (pid {pid}), not on {host}: "
                         f"run `tune-eskd stop {exp.path}` there")
    os.kill(pid, signal.SIGINT)
    print(f"sent SIGINT (as Ctrl-C) to the driver, pid {pid}; waiting while it saves its trials' state", flush=True)
    deadline = time.time() + STOP_WAIT_SECONDS
    while running_driver(exp) is not None:
        if time.time() > deadline:
            print(f"the driver (pid {pid}) is still running after {STOP_WAIT_SECONDS}s; `tune-eskd status "
                  f"{exp.path}` shows its progress, and `tune-eskd stop` again sends a second Ctrl-C, which forces "
                  f"the stop", flush=True)
            return 1
        time.sleep(0.5)
    print(f"stopped. Continue with:\n  tune-eskd resume {exp.path}", flush=True)
    return 0


def rm(path: str) -> int:
    """Delete an experiment folder; the shared store is kept (see `gc`)."""
    exp = Experiment.at(path)
    driver = running_driver(exp)
    if driver is not None:
        where = "" if driver["host"] == socket.gethostname() else f" on host {driver['host']}"
        raise UsageError(f"the driver of {exp.path} is running{where} (pid {driver['pid']}): stop it first with "
                         f"`tune-eskd stop {exp.path}`" + (f" (there; if that driver is gone, delete "
                                                           f"{exp.path}/{DRIVER_FILE})" if where else ""))
    exp.remove()
    print(f"deleted {exp.path}. Its teachers' snapshots and soft labels stay in the shared store: "
          f"`tune-eskd gc {exp.storage}` lists those no experiment uses any more", flush=True)
    return 0


def _referenced(storage: str) -> tuple[list[str], set[tuple[str, int]]]:
    """(experiment paths, {(teacher hash, snapshot epoch)}) of every experiment directly under `storage`."""
    from search_spaces import build_space

    fsys, root = filesystem(storage)
    experiments, used = [], set()
    for info in fsys.get_file_info(pafs.FileSelector(root)):
        if info.type != pafs.FileType.Directory or info.base_name in ("snapshots", "soft_labels"):
            continue
        if fsys.get_file_info(f"{info.path}/{SWEEP_FILE}").type != pafs.FileType.File:
            continue
        exp = Experiment(storage.rstrip("/"), info.base_name)
        try:
            record = exp.read_record()
            space = build_space(record["space_name"], record["space"])
        except (UsageError, OSError) as exc:
            raise UsageError(f"cannot tell what {exp.path} references ({exc}); gc deletes nothing until every "
                             f"experiment on the storage can be read: fix it, or `tune-eskd rm {exp.path}`") from None
        experiments.append(exp.path)
        used |= {(t.teacher_hash(), e) for t in space.needed_teachers() for e in t.snapshots}
    return experiments, used


def _epoch_of(name: str) -> int | None:
    """NNN of `epoch_NNN`, `epoch_NNN.pt` or `epoch_NNN.json`; None for any other name."""
    stem = name.split(".", 1)[0]
    return int(stem[6:]) if stem.startswith("epoch_") and stem[6:].isdigit() else None


def _size(fsys, info) -> int:
    if info.type == pafs.FileType.File:
        return info.size or 0
    return sum(i.size or 0 for i in fsys.get_file_info(pafs.FileSelector(info.path, recursive=True))
               if i.type == pafs.FileType.File)


def unreferenced(storage: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(experiments found, [(path, bytes)]) where the paths are the snapshot files, teacher folders and soft-label
    folders under `storage` that no experiment on it references. Granularity: a teacher hash and snapshot epoch;
    a teacher folder no experiment uses at all goes whole (with its teacher.json curve)."""
    fsys, root = filesystem(storage)
    if fsys.get_file_info(f"{root}/{SWEEP_FILE}").type == pafs.FileType.File:
        parent = storage.rstrip("/").rsplit("/", 1)[0]
        raise UsageError(f"{storage} is an experiment; gc takes the storage that holds it: `tune-eskd gc {parent}`")
    if fsys.get_file_info(root).type != pafs.FileType.Directory:
        raise UsageError(f"storage {storage} does not exist: pass the --storage of your sweeps")
    experiments, used = _referenced(storage)
    hashes = {h for h, _ in used}
    garbage = []
    for store in ("snapshots", "soft_labels"):
        if fsys.get_file_info(f"{root}/{store}").type != pafs.FileType.Directory:
            continue
        for teacher in fsys.get_file_info(pafs.FileSelector(f"{root}/{store}")):
            if teacher.type != pafs.FileType.Directory:
                continue
            if teacher.base_name not in hashes:
                garbage.append((teacher.path, _size(fsys, teacher)))
                continue
            for entry in fsys.get_file_info(pafs.FileSelector(teacher.path)):
                epoch = _epoch_of(entry.base_name)
                if epoch is not None and (teacher.base_name, epoch) not in used:
                    garbage.append((entry.path, _size(fsys, entry)))
    return experiments, sorted(garbage)


def gc(storage: str, yes: bool = False) -> int:
    """List (and with `yes`, delete) what no experiment on `storage` references."""
    storage = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    experiments, garbage = unreferenced(storage)
    total = sum(size for _, size in garbage)
    print(f"{len(experiments)} experiment(s) on {storage}; {len(garbage)} unreferenced item(s), "
          f"{total / 1e6:.1f} MB", flush=True)
    fsys, _ = filesystem(storage)
    for path, size in garbage:
        if yes:
            info = fsys.get_file_info(path)
            (fsys.delete_dir if info.type == pafs.FileType.Directory else fsys.delete_file)(path)
        print(f"  {'deleted ' if yes else ''}{path}  ({size / 1e6:.1f} MB)", flush=True)
    if garbage and not yes:
        print(f"run `tune-eskd gc {storage} --yes` to delete them", flush=True)
    return 0
