"""Domain errors: what the store and the rest of Zumik raise, in their own words.

They know nothing of HTTP. ``zumik.api.errors`` maps each class to its status and OpenAI error
code in one handler (``HTTP_STATUS`` there), so a new domain error is one class here and one
line there.
"""

from __future__ import annotations

from typing import Any


class ZumikError(Exception):
    """The root of every domain error; ``param`` names the offending request field."""

    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class QuotaExceeded(ZumikError):
    """Storing this would pass the project's file-count or byte quota."""

    code = "quota_exceeded"


class TooManyActive(ZumikError):
    """The project already has its maximum of active batches."""

    code = "quota_exceeded"


class FileInUse(ZumikError):
    """The file is the input of a batch that is still running."""

    code = "file_in_use"

    @classmethod
    def of(cls, file_id: str, record: dict[str, Any]) -> FileInUse:
        """Why the file cannot go yet, and what to do: never advice the batch's state
        contradicts."""
        batch_id, status = record["id"], record["status"]
        if status == "cancelling":
            message = (
                f"File {file_id} is the input of batch {batch_id}, which is cancelling: it stops "
                "within a few seconds (its status then reads 'cancelled'); delete the file then"
            )
        else:
            message = (
                f"File {file_id} is the input of batch {batch_id}, which is still {status}; wait "
                f"for it to finish, or cancel it (POST /v1/batches/{batch_id}/cancel) and delete "
                "the file once it reads 'cancelled'"
            )
        return cls(message, param="file_id")


class NoSuchInput(ZumikError):
    """A batch names an input file that does not exist (a request error, not a 404)."""


class InvalidRequest(ZumikError):
    """The request cannot be carried out as asked: a bad value, a wrong state, a mismatch."""


class NotFound(ZumikError):
    """No such object in this project (OpenAI's words: ``No such Upload object: ...``)."""

    def __init__(self, kind: str, object_id: str, param: str = "id") -> None:
        super().__init__(f"No such {kind} object: {object_id}", param=param)


class Conflict(ZumikError):
    """The object changed under the request (for example a part removed while assembling)."""

    code = "conflict"


class TooLarge(ZumikError):
    """What was sent is over a size limit."""
