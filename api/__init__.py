"""The read API and uploads: a Starlette app over the daemon's database, opened read-only."""
