"""How many CPUs this machine gives a private local Ray, found the way Ray finds them, without importing Ray.

Ray (ray._private.utils.get_num_cpus, a private helper) takes the container's CPU quota (cgroup v1
cpu.cfs_quota_us / cpu.cfs_period_us, else cgroup v2 cpu.max) and its cgroup v1 cpuset, the smaller when both are
set, truncated to whole CPUs; else the machine's CPU count. RAY_USE_MULTIPROCESSING_CPU_COUNT=1 makes it skip the
cgroups. A trial asking for more than this can never start on a local Ray.
"""
import multiprocessing
import os

CGROUP = "/sys/fs/cgroup"


def local_cpus(cgroup: str = CGROUP) -> int:
    count = multiprocessing.cpu_count()
    if os.environ.get("RAY_USE_MULTIPROCESSING_CPU_COUNT"):
        return count
    limits = [n for n in (_quota(cgroup), _cpuset(cgroup)) if n]
    return int(min(limits)) if limits else count


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _quota(cgroup: str) -> float | None:
    """The CPU quota in CPUs (at least 1 when set), or None when unlimited or unknown."""
    v1 = _read(f"{cgroup}/cpu/cpu.cfs_quota_us"), _read(f"{cgroup}/cpu/cpu.cfs_period_us")
    try:
        if None not in v1:
            quota = float(v1[0]) / float(v1[1])
        else:
            quota_str, period_str = (_read(f"{cgroup}/cpu.max") or "max 0").split()
            if not (quota_str.isnumeric() and period_str.isnumeric()):
                return None  # "max": no quota
            quota = float(quota_str) / float(period_str)
    except (ValueError, ZeroDivisionError):
        return None
    if quota < 0:
        return None
    return max(quota, 1.0)  # a quota under one CPU still runs one trial


def _cpuset(cgroup: str) -> int | None:
    """The number of CPUs in the cgroup v1 cpuset ("0-3,6"), or None."""
    text = _read(f"{cgroup}/cpuset/cpuset.cpus")
    if not text:
        return None
    try:
        ids = 0
        for part in text.split(","):
            start, _, end = part.partition("-")
            ids += int(end or start) - int(start) + 1
        return ids
    except ValueError:
        return None
