"""The one user-facing error type of the stage library."""


class StageError(Exception):
    """A usage or input error: the CLI prints it as one line and exits with status 2."""
