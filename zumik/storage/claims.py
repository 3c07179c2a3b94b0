"""Claiming a batch: a flock held for the whole run plus an epoch-numbered lease.

Mode ``flock`` (one host): a non-blocking flock on ``<id>.run.lock`` is the claim; the kernel
frees it the instant the holder dies, so a respawned worker takes over at once.

Mode ``lease`` (several hosts on a shared filesystem, where flock is unreliable): the claim is
the highest-numbered ``<id>.run/lease.<epoch>`` file, created with ``O_EXCL`` (create-if-absent is
enforced by the file server), refreshed by a heartbeat. A contender takes over only after the
lease stayed unchanged for ``lease_seconds`` on its *own* monotonic clock, so clock skew between
hosts cannot expire a live claim. Each epoch writes only files named with its epoch.

Both modes write the lease, so a holder that finds a higher epoch knows it lost and stops.

On a shared filesystem a lease is only ever created (``O_EXCL``) or rewritten *in place* by its
holder, never replaced by rename: another host opening it then reads the latest heartbeat under
close-to-open consistency, where a replaced file can be read stale (or not at all) until that
host's cache times out. The holder looks for ``lease.<epoch+1>`` by name, not by listing the
folder (listings can be cached). The lease names its holder: host name + boot id, pid, token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from zumik.storage import fsutil
from zumik.storage.batchhandle import BatchHandle

LEASE_BYTES = 512  # a lease is rewritten in place at this fixed size (padded with spaces)


def holder() -> str:
    """This process as a lease holder: host name + boot id and pid (fsutil.host_id)."""
    return f"{fsutil.host_id()}:{os.getpid()}"


def current_lease(batch: BatchHandle) -> tuple[int, bytes | None]:
    """The highest epoch and the bytes of its lease file (None when there is none)."""
    leases = batch.leases()
    if not leases:
        return 0, None
    epoch, path = leases[-1]
    try:
        return epoch, path.read_bytes()
    except FileNotFoundError:
        return epoch, b""


@dataclass
class Claim:
    """This executor's hold on one batch."""

    batch: BatchHandle
    epoch: int
    lock: FileLock | None
    lost: bool = False
    released: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    beats: int = 0

    @property
    def batch_id(self) -> str:
        return self.batch.batch_id

    @property
    def lease_path(self) -> Path:
        return self.batch.lease_path(self.epoch)

    def _lease_bytes(self, released: bool = False) -> bytes:
        self.beats += 1
        data = json.dumps(
            {
                "epoch": self.epoch,
                "holder": holder(),
                "token": self.token,
                "beat": self.beats,
                "heartbeat": time.time(),
                "released": released,
            }
        ).encode()
        return data.ljust(LEASE_BYTES, b" ")

    def _rewrite(self, released: bool = False) -> None:
        """Rewrite the lease in place (never rename: see the module docstring)."""
        fd = os.open(self.lease_path, os.O_WRONLY)
        try:
            fsutil.pwrite(fd, self._lease_bytes(released), 0)
            fsutil.fsync(fd)
        finally:
            os.close(fd)

    def heartbeat(self) -> bool:
        """Refresh the lease; return False (and mark lost) if a higher epoch took over."""
        if self.lost:
            return False
        if self.batch.lease_path(self.epoch + 1).exists():
            self.lost = True
            return False
        self._rewrite()
        return True

    def release(self) -> None:
        """Mark the lease released (others may claim at once) and drop the flock."""
        if self.released:
            return
        self.released = True
        if not self.lost:
            with contextlib.suppress(OSError):
                self._rewrite(released=True)
        if self.lock is not None:
            self.lock.release()


@dataclass
class Claimer:
    """Tries claims for one executor; remembers what leases it has seen and when."""

    mode: str
    lease_seconds: float
    seen: dict[str, tuple[tuple[int, bytes | None], float]] = field(default_factory=dict)

    def try_claim(self, batch: BatchHandle) -> Claim | None:
        lock = None
        if self.mode == "flock":
            lock = batch.run_lock()
            try:
                lock.acquire()
            except Timeout:
                return None
        epoch, content = current_lease(batch)
        if (
            self.mode == "lease"
            and content is not None
            and not self._free(batch.batch_id, epoch, content)
        ):
            return None
        claim = Claim(batch, epoch + 1, lock)
        try:
            fd = os.open(claim.lease_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another contender won this epoch
            if lock is not None:
                lock.release()
            return None
        try:
            try:
                fsutil.write_all(fd, claim._lease_bytes())
                fsutil.fsync(fd)
            finally:
                os.close(fd)
            fsutil.fsync_dir(claim.lease_path.parent)
        except OSError:  # e.g. disk full: give the claim up cleanly, try again later
            claim.lease_path.unlink(missing_ok=True)
            if lock is not None:
                lock.release()
            return None
        self.seen.pop(batch.batch_id, None)
        for old_epoch, path in batch.leases():
            if old_epoch < epoch:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return claim

    def _free(self, batch_id: str, epoch: int, content: bytes) -> bool:
        """Whether a lease may be taken: released, or unchanged for a full lease period."""
        with contextlib.suppress(ValueError):
            if json.loads(content).get("released"):
                return True
        now = time.monotonic()
        state = (epoch, content)
        previous = self.seen.get(batch_id)
        if previous is None or previous[0] != state:
            self.seen[batch_id] = (state, now)
            return False
        return now - previous[1] >= self.lease_seconds
