"""What Tune will restore: a stage's trials as its saved experiment state lists them (Ray's public
ExperimentAnalysis). The sweep driver's resume decisions read this, not trial.json (trial_files.py): Tune records
a trial when it adds it, before it starts and has a folder, so only Tune's own state lists every trial it will
bring back. Reports and `tune-eskd status` read trial_files instead, without Ray."""
import logging


def stage_trials(path: str) -> list:
    """The trials in a stage's saved state. A trial cut before its first report has no metrics yet: expected
    after an interruption, so Ray's "Failed to fetch metrics" warning about it is silenced."""
    from ray.tune import ExperimentAnalysis

    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        return ExperimentAnalysis(path).trials
    finally:
        analysis_log.setLevel(level)
