"""Errors a user can act on: each message names the file or value and says what to do."""


class InputError(ValueError):
    """Unusable input: the message names the file or value and says what to do."""


class WeightsError(ValueError):
    """A checkpoint is missing, unreadable or does not fit its module."""


class WeightsMissing(WeightsError):
    """A weight file or folder the loader needs is not there (a front end may offer to download it)."""


class WeightsWarning(UserWarning):
    """A checkpoint loaded after an adjustment worth knowing of (`check-weights` lists them). `kind`:
    "extra keys ignored", "prefix stripped" or "wrapper unwrapped"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class DownloadError(RuntimeError):
    """A file could not be fetched or verified: the message names the URL, the HTTP status (if the server
    answered), the environment variables (HF_ENDPOINT, HF_TOKEN) and the manual route (docs/DOWNLOAD.md)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
