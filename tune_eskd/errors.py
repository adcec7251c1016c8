"""The one error type users see: a one-line message that names the problem and the fix."""


class UsageError(Exception):
    """Bad input caught before any work starts. The CLI prints it on one line and exits with status 2.

    `problem` and `fix` are kept apart, so code that reports the problem its own way (e.g. a warning before it
    repairs the damage itself) reads the field instead of parsing the message."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}: {fix}" if fix else problem)
