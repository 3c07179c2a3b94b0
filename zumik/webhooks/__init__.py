"""Webhook endpoints, signing, the outbox and its deliverer."""
