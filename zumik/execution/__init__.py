"""The executor: claim, validate, send, finalize; providers, limits, scheduling."""
