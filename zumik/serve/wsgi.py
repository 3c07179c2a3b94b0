"""The WSGI app for ``zumik serve`` (works from any directory, unlike the root ``wsgi.py``)."""

from zumik import create_app

app = create_app()
