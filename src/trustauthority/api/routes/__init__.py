"""Routers of `/v1`, one module per area."""
