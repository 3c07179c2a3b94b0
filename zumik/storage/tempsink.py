"""The validated temp file: bytes of an upload (direct or assembled from parts) written beside
their final place while every line is checked, then fsynced; discarded on any failure."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from zumik.core.exceptions import InvalidRequest, TooLarge
from zumik.core.lines import LineError
from zumik.core.validator import JsonlValidator
from zumik.settings import Settings
from zumik.storage import fsutil

CHUNK = 1024 * 1024  # matches gunicorn's largest body read: fewer copies of its read-ahead


class TempSink:
    """Writes the file part to a temp file while validating it."""

    def __init__(self, directory: Path, settings: Settings) -> None:
        self.path = fsutil.temp_path(directory, "upload-")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self.max_bytes = settings.max_upload_bytes
        self.validator = JsonlValidator(
            settings.max_line_bytes,
            settings.max_requests,
            settings.max_json_depth,
            settings.max_embedding_inputs,
        )

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLarge(
                f"File is larger than the {self.max_bytes}-byte upload limit",
                param="file",
                code="file_too_large",
            )
        try:
            self.validator.feed(data)
        except LineError as exc:
            raise InvalidRequest(
                f"Invalid batch input file: {exc}", param="file", code=exc.code
            ) from None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def finish(self) -> int:
        try:
            requests = self.validator.finish()
        except LineError as exc:
            raise InvalidRequest(
                f"Invalid batch input file: {exc}", param="file", code=exc.code
            ) from None
        os.fsync(self._fd)
        self.close()
        return requests

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
