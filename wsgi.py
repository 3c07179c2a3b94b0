"""WSGI entry for gunicorn: ``gunicorn wsgi:app``. The executor starts per worker, after the
fork, from the hooks in ``gunicorn.conf.py`` (never here, never in the master)."""

from zumik import create_app

app = create_app()
