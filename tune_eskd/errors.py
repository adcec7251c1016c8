"""The one error type users see: a one-line message that names the problem and the fix."""


class UsageError(Exception):
    """Bad input caught before any work starts. The CLI prints it on one line and exits with status 2."""
