"""Running under gunicorn: its config, the worker class, JSON error pages, the WSGI app."""
