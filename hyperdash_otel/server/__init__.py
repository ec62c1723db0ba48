"""Tornado server: app factory, handlers, WebSocket fan-out, lifecycle."""
