"""The ingest daemon: watches the inbox and turns each complete file into a record."""
