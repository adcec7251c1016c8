"""Every random stream of a run, keyed by (seed, role, stream, ...).

The role (teacher or student) is part of every key, so a seed-0 student never shares the seed-0 teacher's
initial weights, batch order or augmented views, even with the same architecture and data: each seed of each
role is an independent replicate. All streams are counter-based (a fresh generator per key), so any epoch's
order or views can be recomputed on their own, e.g. when a trial resumes or soft labels are cached.
"""
import numpy as np

ROLES = {"teacher": 0, "student": 1}
INIT, ORDER, CROP, FLIP = range(4)
# Bump when a stream's derivation changes: the teacher hash includes it, so stored snapshots of the old
# derivation are not taken for the weights the new one would train.
VERSION = 2  # 2: every stream keyed by role


def generator(seed: int, role: str, stream: int, *keys: int) -> np.random.Generator:
    """The generator of one stream of a (seed, role) run, e.g. generator(0, "student", CROP, epoch)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return np.random.default_rng([int(seed), ROLES[role], stream, *(int(k) for k in keys)])


def init_seed(seed: int, role: str) -> int:
    """The torch seed of the run's weight initialisation."""
    return int(generator(seed, role, INIT).integers(2**63))
