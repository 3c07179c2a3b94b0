"""Durable file primitives: atomic replace, publish-once, temp files owned by a host and a
pid, torn-tail repair.

Temp files are named ``.tmp-<host>@<pid>-<label><random>``, where ``<host>`` is this machine's
host name and boot id (``host_id``). Several hosts may share a data dir on a network
filesystem, and a pid means nothing on another host: a sweep removes a temp file only when it
is this host's and its process is gone, or when it is older than ``max_age`` (whoever made it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def host_id() -> str:
    """This machine as ``<host name>.<first 8 hex of the boot id>``: a host restarted (new boot
    id) is a new owner, and no two machines sharing a data dir should share a host name."""
    try:
        boot = BOOT_ID.read_text().strip().replace("-", "")[:8]
    except OSError:
        boot = "noboot"
    name = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"
    return f"{name}.{boot}"


def owner_alive(host: str, pid: int) -> bool | None:
    """Whether the process ``pid`` of ``host`` (a ``host_id``) runs: this host's is checked;
    this machine's from before a reboot (same name, another boot id) is gone; another host's is
    unknown here (None): its pid means nothing on this machine. The one host identity of
    temps, leases, outbox claims and metrics snapshots."""
    me = host_id()
    if host == me:
        return pid_alive(pid)
    if host.rpartition(".")[0] == me.rpartition(".")[0]:
        return False  # this machine, an earlier boot: every process of that boot is gone
    return None


def temp_path(directory: Path, label: str = "") -> Path:
    """A fresh temp name in ``directory`` naming its owner, this host and pid (``sweep_temps``)."""
    return directory / f"{TEMP_PREFIX}{host_id()}@{os.getpid()}-{label}{secrets.token_hex(6)}"


def temp_owner(name: str) -> tuple[str, int] | None:
    """The (host, pid) a temp file name records; None for a name in another format."""
    host, sep, rest = name[len(TEMP_PREFIX) :].partition("@")
    pid = rest.split("-", 1)[0]
    return (host, int(pid)) if sep and pid.isdigit() else None


def fsync_dir(directory: Path) -> None:
    """Make renames and creations inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(tmp: Path, data: bytes) -> None:
    """Create ``tmp`` (it must not exist) holding ``data``, fsynced before it is closed."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, ``os.replace``, fsync of the folder."""
    tmp = temp_path(path.parent)
    try:
        write_durably(tmp, data)
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


def link_once(tmp: Path, final: Path) -> bool:
    """Publish a fully written, fsynced ``tmp`` as ``final`` only if ``final`` does not exist.

    ``link()`` is create-if-absent, decided by the file server on every shared filesystem
    Zumik supports. False if ``final`` exists. On another error the link may still have
    happened (a retransmitted NFS call): ``tmp`` then has two links, which is success.
    ``tmp`` stays for the caller to unlink."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError:
        if os.stat(tmp).st_nlink != 2:
            raise
    fsync_dir(final.parent)
    return True


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (killed, not yet reaped: its parent died too and the
    container's init may be slow or never reap) writes nothing more, so it counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def sweep_temps(directory: Path, max_age: float = 86_400.0) -> int:
    """Remove this host's temp files whose process is gone (this machine's from before a
    reboot included), and any older than ``max_age``.

    Another host's temp file is judged only by its age: its pid says nothing here, and its
    writer may be uploading into it right now."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        owner = temp_owner(entry.name)
        abandoned = owner is not None and owner_alive(*owner) is False
        with contextlib.suppress(FileNotFoundError):
            if abandoned or now - entry.stat().st_mtime > max_age:
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
