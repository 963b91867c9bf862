"""Shared error type for user mistakes."""


class UserError(Exception):
    """A mistake in user input (config, corpus, checkpoint, sweep file): shown as one line, exit 2."""


class Diverged(UserError):
    """A non-finite loss or gradient norm: the run stops, keeps its last good checkpoint (exit 2, one line:
    the step and the loss; usually the learning rate or precision is to blame)."""


class ConfigError(UserError):
    """A bad config key, type or value (the pretraining config or a command's options)."""


class Preempted(UserError):
    """SIGTERM or SIGUSR1 (a scheduler's notice): the run saved its checkpoint and stops with `exit_code`
    (128 + the signal number, as a shell reports a process killed by it) so that schedulers requeue it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
