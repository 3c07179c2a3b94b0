"""Durable file primitives: atomic replace, temp files owned by a pid, torn-tail repair."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def temp_path(directory: Path, label: str = "") -> Path:
    """A fresh temp name in ``directory`` that records the owning pid (see ``sweep_temps``)."""
    return directory / f"{TEMP_PREFIX}{os.getpid()}-{label}{secrets.token_hex(6)}"


def fsync_dir(directory: Path) -> None:
    """Make renames and creations inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, ``os.replace``, fsync of the folder."""
    tmp = temp_path(path.parent)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as compact JSON."""
    atomic_write(path, json.dumps(obj, separators=(",", ":")).encode())


def read_json(path: Path) -> Any | None:
    """The JSON document at ``path``, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def commit_temp(tmp: Path, final: Path) -> None:
    """Move a fully written and fsynced temp file into place durably."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temps(directory: Path, max_age: float = 86_400.0) -> int:
    """Remove temp files whose owner process is gone (or that are older than ``max_age``)."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        pid_text = entry.name[len(TEMP_PREFIX):].split("-", 1)[0]
        owner_alive = pid_text.isdigit() and _pid_alive(int(pid_text))
        with contextlib.suppress(FileNotFoundError):
            if not owner_alive or now - entry.stat().st_mtime > max_age:
                os.unlink(entry.path)
                removed += 1
    return removed


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no trailing newline) off ``path``; return the bytes removed."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        pos, end = size, 0
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            index = f.read(step).rfind(b"\n")
            if index != -1:
                end = pos + index + 1
                break
        if end != size:
            f.truncate(end)
            os.fsync(f.fileno())
        return size - end
