"""gunicorn settings and hooks for Zumik: one executor thread per worker, started after fork.

Used by ``zumik serve`` and by ``gunicorn.conf.py`` at the project root, which gunicorn reads
automatically when started there. Every value can still be overridden on the command line.
"""

from __future__ import annotations

import gc
import os

from zumik.settings import load_settings

_settings = load_settings()  # (settings.py is the one reader of ZUMIK_* variables)

# gthread (a sync worker's timeout would cut long uploads and downloads) with Zumik's defences
# against slow clients: heads read without a thread, I/O timeouts and a minimum rate.
worker_class = "zumik.serve.worker.ZumikWorker"
threads = _settings.threads
workers = _settings.workers
bind = _settings.bind or f"{_settings.host}:{_settings.port}"
timeout = 60
graceful_timeout = 30
keepalive = 5
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
control_socket_disable = True  # one fixed socket path would clash between instances
accesslog = _settings.access_log


def _executor(worker):
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", {})
    zumik = extensions.get("zumik")
    return zumik.executor if zumik is not None else None


def post_worker_init(worker):
    # The executor allocates many short-lived objects per line; with the default thresholds the
    # collector ran ~600 times per 20,000 lines (0.24 s, over a third of it rescanning the app's
    # start-up objects). Freezing those and collecting young objects less often: 0.007 s.
    gc.set_threshold(20_000, 20, 20)
    gc.freeze()
    executor = _executor(worker)
    if executor is not None:
        executor.start()


def worker_exit(server, worker):
    executor = _executor(worker)
    if executor is not None:
        executor.stop(timeout=graceful_timeout - 5)
