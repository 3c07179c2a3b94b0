"""The HTTP API: flask context, errors, auth, request parsing, one blueprint per resource."""
