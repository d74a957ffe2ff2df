"""What the roles of one daemon process share, and nothing more: its config and store, the
database writer, the work signal, the claims it holds, the work in flight, the stop, and how a
fault of the environment is reported and waited out."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from daemon.database.work_signal import WorkSignal
from daemon.database.writer import DatabaseWriter
from daemon.errors import EnvironmentFault, storage_fault
from daemon.held_claims import HeldClaims
from daemon.outage import Outage
from daemon.roles.in_flight import InFlight
from models.config import Config
from models.diskspace import data_disk_problem
from models.files import folder_problem
from models.store import Store, StoreProblem, remove_left_fetches


@dataclass
class Me:
    """This process as a worker of the queue: its daemon_state row, once started, and its name."""

    name: str
    worker_id: int | None = None

    def by_me(self) -> dict[str, str]:
        return {"processed_by": self.name}


@dataclass
class Shared:
    config: Config
    store: Store
    writer: DatabaseWriter
    signal: WorkSignal
    me: Me
    outage: Outage
    stopping: threading.Event = field(default_factory=threading.Event)
    claims: HeldClaims = field(default_factory=HeldClaims)
    in_flight: InFlight = field(default_factory=InFlight)

    def report(self, fault: EnvironmentFault) -> None:
        """Hold work back for `fault`; named for its cause when that is a full data disk, which
        SQLite reports as an I/O error when it cannot even make its journal files."""
        problem = data_disk_problem(self.config.data_dir)
        if problem is not None and problem != fault.problem:
            fault = EnvironmentFault(problem, fault.detail)
        self.outage.report(fault)

    def wait_turn(self) -> bool:
        """Wait out a fault that stands; False once stopping."""
        return self.outage.wait_turn(self.stopping)

    def relative(self, path: Path) -> str:
        """An inbox file's path inside the inbox (its name, if it is not in it)."""
        try:
            return path.relative_to(self.config.inbox_dir).as_posix()
        except ValueError:
            return path.name

    def local_folders(self) -> list[Path]:
        """The folders of this machine that are not the store's: the inbox, the upload staging,
        and where objects of a remote store are fetched to."""
        folders = [self.config.inbox_dir, self.config.uploads_dir]
        return folders + [self.config.work_dir] if self.store.remote else folders

    def _make_local_folders(self) -> None:
        for folder in self.local_folders():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise storage_fault(error, folder.name) from error

    def prepare_folders(self) -> int:
        """Make the local folders and the store ready; how many leftovers of a kill went."""
        self._make_local_folders()
        left = remove_left_fetches(self.config.work_dir) if self.store.remote else 0
        with store_faults():
            return self.store.prepare() + left

    def check_environment(self) -> None:
        """Raise the EnvironmentFault that stands, if any (but the database's)."""
        self._make_local_folders()
        for folder in self.local_folders():
            problem = folder_problem(folder)
            if problem is not None:
                raise EnvironmentFault(problem, f"{folder.name}/")
        with store_faults():
            self.store.check()
        problem = data_disk_problem(self.config.data_dir)
        if problem is not None:
            raise EnvironmentFault(problem, "free space checked")


@contextmanager
def store_faults() -> Iterator[None]:
    """The store's problems, as faults of the environment."""
    try:
        yield
    except StoreProblem as problem:
        if problem.cause is not None:
            raise storage_fault(problem.cause, problem.part) from problem
        raise EnvironmentFault(problem.problem, f"{problem.part}/") from problem


def spawn(threads: list[threading.Thread], name: str, target: Callable[[], None]) -> None:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    threads.append(thread)
