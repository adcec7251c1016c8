"""What a trial learns from Ray about where it runs: its device and its CPU threads."""
import logging

import ray
import torch
from ray import tune

from tune_eskd.engine import pick_device, set_threads


def trial_device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU; threads = trial CPUs."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    resources = tune.get_context().get_trial_resources()
    set_threads(int(resources.head_cpus) or 1)
    return pick_device("cuda" if ray.get_gpu_ids() else "cpu")


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()
