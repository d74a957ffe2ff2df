"""The per-image stages after hashing, as plain functions: decode (within a memory budget),
metadata, thumbnails."""
