"""The daemon's side of the database: its one writer thread, the rows it writes, and the work
queue (claims with leases) with the signal that wakes idle workers."""
