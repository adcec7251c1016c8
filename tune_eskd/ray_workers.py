"""Set-up that every Ray worker of a sweep runs first (Ray's `worker_process_setup_hook`)."""
import sys


def quiet_ray_exit() -> None:
    """Ray stops an idle worker with SIGTERM, and its handler raises SystemExit. When the signal lands inside a
    weakref callback, Python cannot raise it there and prints "Exception ignored in ... SystemExit: 1" with a
    traceback, which Ray forwards to the driver's console. Drop those; every other unraisable error still
    prints."""
    default = sys.unraisablehook

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, SystemExit):
            default(unraisable)

    sys.unraisablehook = hook


# What the sweep's ray.init gives every worker (local instance, cluster job, and the tests' shared instance)
RUNTIME_ENV = {"worker_process_setup_hook": f"{__name__}.{quiet_ray_exit.__name__}"}
