"""Experiment trackers, through Ray Tune's own logger callbacks: `--mlflow URI` (MLflowLoggerCallback) and
`--wandb PROJECT` (WandbLoggerCallback, see wandb_logging.py). TensorBoard needs nothing: Tune's default logger
writes event files in every trial folder, so `tensorboard --logdir STORAGE/NAME` shows both stages.

One MLflow experiment (or W&B group) per sweep and stage, `NAME/teachers` and `NAME/students`: a run per trial,
its config as params (flattened: `trial/alpha`, `teacher/model`, ...), every epoch's metrics at its step.
"""
import importlib.util
import os

from .errors import UsageError

# W&B reads these in its logging actor, which Ray starts on the driver's node but not in the driver's environment.
WANDB_ENV = ("WANDB_MODE", "WANDB_DIR", "WANDB_ENTITY")


def _require(module: str, extra: str, flag: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{flag} needs {module}, which is not installed: pip install 'tune-eskd[{extra}]'")


def check_trackers(mlflow_uri: str | None, wandb_project: str | None) -> None:
    """Refuse a tracker whose library is missing, or an MLflow store given as a relative path, up front."""
    if mlflow_uri is not None:
        _require("mlflow", "mlflow", "--mlflow")
        if "://" not in mlflow_uri and not os.path.isabs(mlflow_uri):
            raise UsageError(f"--mlflow {mlflow_uri!r} is a relative path: give a URI such as "
                             f"sqlite:///{os.path.abspath(mlflow_uri)}.db or http://HOST:5000")
    if wandb_project is not None:
        _require("wandb", "wandb", "--wandb")
        if not wandb_project or "/" in wandb_project:
            raise UsageError(f"--wandb {wandb_project!r} must be a W&B project name, e.g. eskd "
                             f"(set WANDB_ENTITY for a team)")


def tracker_callbacks(mlflow_uri: str | None, wandb_project: str | None, group: str) -> list:
    """Ray Tune callbacks logging every trial of a stage (`group` = NAME/stage) to the trackers asked for."""
    callbacks = []
    if mlflow_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name=group,
                                              tags={"tune_eskd_group": group}))
    if wandb_project:
        from .wandb_logging import WandbCallback

        settings = {k[len("WANDB_"):].lower(): os.environ[k] for k in WANDB_ENV if os.environ.get(k)}
        callbacks.append(WandbCallback(project=wandb_project, group=group, **settings))
    return callbacks
