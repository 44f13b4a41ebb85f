"""Errors a user can act on: each message names the file or value and says what to do."""


class InputError(ValueError):
    """Unusable input: the message names the file or value and says what to do."""


class WeightsError(ValueError):
    """A checkpoint is missing, unreadable or does not fit its module."""


class DownloadError(RuntimeError):
    """A file could not be fetched or verified: the message names the URL, the HTTP status (if the server
    answered), the environment variables (HF_ENDPOINT, HF_TOKEN) and the manual route (docs/DOWNLOAD.md)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
