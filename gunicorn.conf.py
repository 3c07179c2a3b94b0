"""Read by gunicorn when started from the project root: Zumik's worker hooks and defaults."""

from zumik.serve.gunicorn_conf import *  # noqa: F403
