"""Errors a user can act on: each message names the file or value and says what to do."""


class InputError(ValueError):
    """Unusable input: the message names the file or value and says what to do."""


class WeightsError(ValueError):
    """A checkpoint is missing, unreadable or does not fit its module."""
