"""The domain's words: no I/O, no flask, werkzeug, aiohttp or gunicorn."""
