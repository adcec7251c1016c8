"""tune_eskd.ray_workers: the sweep's Ray workers do not print Ray's SIGTERM exit as a traceback."""
import subprocess
import sys

UNRAISABLE = """
import sys
if sys.argv[1] == "hook":
    from tune_eskd.ray_workers import quiet_ray_exit
    quiet_ray_exit()

class StoppedBySigterm:  # what Ray's SIGTERM handler does when it fires inside a weakref callback
    def __del__(self):
        raise SystemExit(1)

class Broken:
    def __del__(self):
        raise ValueError("a real error in a destructor")

StoppedBySigterm()
Broken()
"""

WORKER_HOOK = """
import sys
import ray
from tune_eskd.pipeline import _start_ray

assert _start_ray(None)
print("HOOK", ray.get(ray.remote(lambda: sys.unraisablehook.__qualname__).remote()))
ray.shutdown()
"""


def _stderr(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", UNRAISABLE, mode], capture_output=True, text=True).stderr


def test_the_hook_drops_a_systemexit_and_keeps_every_other_unraisable_error():
    assert "SystemExit: 1" in _stderr("plain")  # what a worker printed before
    printed = _stderr("hook")
    assert "SystemExit" not in printed and "ValueError: a real error in a destructor" in printed


def test_the_sweeps_ray_workers_install_the_hook():
    done = subprocess.run([sys.executable, "-c", WORKER_HOOK], capture_output=True, text=True, timeout=300)
    assert "HOOK quiet_ray_exit.<locals>.hook" in done.stdout, done.stdout + done.stderr
