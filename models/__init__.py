"""Shared by the daemon and the API: configuration, tables, engine and read queries."""
