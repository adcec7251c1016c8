"""Named search spaces shipped as YAML, and the loader that validates them (see space.py)."""
from importlib import resources

import yaml

from tune_eskd.errors import UsageError

from tune_eskd.trial import StudentTrial

from .space import KEYS, SweepSpace, build_space, is_distribution, parse_overrides, student_config

__all__ = ["KEYS", "StudentTrial", "SweepSpace", "build_space", "is_distribution", "list_presets", "load_space",
           "parse_overrides", "student_config"]


def list_presets() -> list[str]:
    return sorted(f.name[:-5] for f in resources.files(__package__).iterdir() if f.name.endswith(".yaml"))


def load_space(name_or_file: str, overrides: dict | None = None) -> SweepSpace:
    """A preset by name, or a YAML file by path, validated with overrides applied."""
    if name_or_file in list_presets():
        text = resources.files(__package__).joinpath(f"{name_or_file}.yaml").read_text()
        label = name_or_file
    elif name_or_file.endswith((".yaml", ".yml")):
        try:
            with open(name_or_file) as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read search space {name_or_file}: {exc.strerror}") from None
        label = name_or_file
    else:
        raise UsageError(f"unknown search space {name_or_file!r}: use one of {', '.join(list_presets())} "
                         f"or a path to a .yaml file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"search space {label} is not valid YAML{where}: fix the syntax") from None
    return build_space(label, raw if raw is not None else {}, overrides)
