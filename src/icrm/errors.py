"""Exception types the CLI turns into exit codes.

Anything raised as a :class:`UserError` (bad data, a bad option, a model that
cannot be used as asked) is reported by the CLI as one line and exit code 2;
anything else is a bug or an environment failure and exits 1.
"""


class UserError(ValueError):
    """A problem with the user's input or options, with a message that says where."""


class TrainingStopped(RuntimeError):
    """Training ended early (interrupt, non-finite loss); its run directory is kept for --resume."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
