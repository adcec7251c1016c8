"""The GPU-scale seed study preset (issue 14) and the `tune-eskd spaces` table that lists it."""
import re

from search_spaces import load_space
from tune_eskd.cli import main


def test_seed_eskd_gpu_is_the_seed_study_with_five_seeds():
    space = load_space("seed-eskd-gpu")
    seed = load_space("seed-eskd").values
    differing = {k for k, v in space.values.items() if seed.get(k) != v}
    assert differing == {"seed", "description"}
    assert space.values["seed"] == [0, 1, 2, 3, 4]
    assert space.values["teacher_arch"] == ["resnet18", "resnet34"]
    assert space.values["snapshots"] == [3, 6, 9, 10] and space.values["teacher_epochs"] == 10
    # 2 depths x 4 snapshots x 5 seeds KD students, plus 5 CE-only baselines
    assert space.trial_counts() == (2, 45)


def test_spaces_table_columns_line_up_with_long_names(capsys):
    main(["spaces"])
    lines = capsys.readouterr().out.splitlines()
    # the right-aligned teachers column ends at the same place on every line; with a fixed 12-character name
    # column the 13-character seed-eskd-gpu pushed its row one place to the right
    ends = {re.match(r"\S+\s+\S+", line).end() for line in lines}
    assert len(ends) == 1, lines
