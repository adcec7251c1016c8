"""`tune-eskd results` and `tune-eskd report` (registered by tune_eskd.cli)."""


def add_subcommands(sub) -> None:
    pass
