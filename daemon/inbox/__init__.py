"""The inbox: noticing complete files, reading them safely, and who watches (one process)."""
