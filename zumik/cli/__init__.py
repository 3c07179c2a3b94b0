"""The ``zumik`` command: serve, keys, webhooks, batch."""
