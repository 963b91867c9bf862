"""Shared error type for user mistakes."""


class UserError(Exception):
    """A mistake in user input (config, corpus, checkpoint, sweep file): shown as one line, exit 2."""
