"""Shared error type for user mistakes."""


class UserError(Exception):
    """A mistake in user input (config, corpus, checkpoint, sweep file): shown as one line, exit 2."""


class Diverged(UserError):
    """A non-finite loss or gradient norm: the run stops, keeps its last good checkpoint (exit 2, one line:
    the step and the loss; usually the learning rate or precision is to blame)."""


class ConfigError(UserError):
    """A bad config key, type or value (the pretraining config or a command's options)."""
