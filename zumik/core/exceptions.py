"""Domain errors: what the store and the rest of Zumik raise, in their own words.

They know nothing of HTTP. ``zumik.errors`` maps each class to its status and OpenAI error
code in one handler (``HTTP_STATUS`` there), so a new domain error is one class here and one
line there.
"""

from __future__ import annotations


class ZumikError(Exception):
    """The root of every domain error; ``param`` names the offending request field."""

    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class QuotaExceeded(ZumikError):
    """Storing this would pass the project's file-count or byte quota."""

    code = "quota_exceeded"


class TooManyActive(ZumikError):
    """The project already has its maximum of active batches."""

    code = "quota_exceeded"


class FileInUse(ZumikError):
    """The file is the input of a batch that is still running."""

    code = "file_in_use"


class NoSuchInput(ZumikError):
    """A batch names an input file that does not exist (a request error, not a 404)."""
