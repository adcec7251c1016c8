"""`--wandb`: Ray Tune's WandbLoggerCallback, with each trial's W&B run written out before Ray stops its actor.

Ray's logging actor calls wandb.finish() and returns; the callback then kills the actor at once, and Ray kills the
actor's child processes with it, W&B's service among them. W&B leaves the rest of its shutdown to an atexit hook
that a killed process never runs, so a run's offline log was sometimes still empty (seen in this project's
tests: one student's `.wandb` file held no records). wandb.teardown() waits for the service to finish.
"""
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor


class _WrittenOutLoggingActor(_WandbLoggingActor):
    def run(self):
        super().run()
        self._wandb.teardown()


class WandbCallback(WandbLoggerCallback):
    _logger_actor_cls = _WrittenOutLoggingActor
