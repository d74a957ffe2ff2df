"""The one error of a store that is not this machine's (an object store): a request to it
failed. It is an OSError, as every fault of a store is, and says in a few words what is wrong
("object store unreachable"), never an endpoint or a key."""

from __future__ import annotations


class StoreFault(OSError):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.strerror = "a request to the bucket failed"
