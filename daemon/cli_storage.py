"""The `htx storage` commands: gc (the objects no record points to) and copy (every object into
the other store, to move an install between the data folder and a bucket)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from daemon.cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, open_database, path_problem, reason
from models.config import Config

if TYPE_CHECKING:
    from models.store_copy import Copied, Outcome

# How often `copy` says how far it is, in objects.
PROGRESS_EVERY = 100

COPY_NOTES = (
    "Stop every daemon and API of this configuration first: what they write while the copy runs "
    "may be missed. Once it has said that every object was checked, set storage.backend to the "
    "destination and start them again; no record changes, the keys are the same in both stores. "
    "Safe to run again: what the destination holds already with the same bytes is skipped."
)


def min_age(value: str) -> float:
    """--min-age-s: seconds, not negative."""
    seconds = float(value)
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {value}")
    return seconds


def cmd_storage_gc(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from models.store_sweep import find_orphans, remove_orphans
    from models.stores import open_store

    engine = open_database(config, "storage gc", readonly=True)  # only the store changes
    if engine is None:
        return EXIT_FAILURE
    store = open_store(config)
    if not store.remote and not config.data_dir.is_dir():
        engine.dispose()
        print(f"htx storage gc: no data folder: {config.data_dir}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        sweep = find_orphans(store, engine, min_age_s=args.min_age_s)
        for orphan in sweep.orphans:
            print(orphan.key)
        if sweep.young:
            print(f"{_count(sweep.young, 'object')} no record names left alone: younger than {args.min_age_s:g} s")
        if sweep.kept_failed:
            print(f"{_count(len(sweep.kept_failed), 'file')} in failed/ without a record kept: the daemon keeps there what it could not register")
        size = f"{sweep.orphan_bytes / 1e6:.1f} MB"
        if not args.delete:
            hint = "; run with --delete to remove them" if sweep.orphans else ""
            print(f"{_count(len(sweep.orphans), 'orphan')}, {size}{hint}")
            return EXIT_OK
        removed = remove_orphans(store, engine, sweep.orphans)
        named_since = len(sweep.orphans) - len(removed)
        kept = f"; {named_since} kept: a record names them now" if named_since else ""
        print(f"removed {_count(len(removed), 'orphan')}, {sum(each.size for each in removed) / 1e6:.1f} MB{kept}")
        return EXIT_OK
    except OSError as error:
        print(f"htx storage gc: the store: {store_problem(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except DBAPIError as error:
        print(f"htx storage gc: the database: {reason(error)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        engine.dispose()


def cmd_storage_copy(config: Config, args: argparse.Namespace) -> int:
    from models.store import StoreProblem
    from models.store_copy import REPLACED, copy_store
    from models.stores import open_store

    if args.to == config.storage.backend:
        print(f"htx storage copy: storage.backend is {args.to!r} already: copy --to the other store", file=sys.stderr)
        return EXIT_USAGE
    problem = _destination_problem(config) if args.to == "s3" else None
    if problem is not None:
        print(f"htx storage copy: {problem}", file=sys.stderr)
        return EXIT_USAGE
    target = dataclasses.replace(config, storage=dataclasses.replace(config.storage, backend=args.to))
    source, destination = open_store(config), open_store(target)
    if not source.remote and not config.data_dir.is_dir():
        print(f"htx storage copy: no data folder: {config.data_dir}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        destination.check()
    except StoreProblem as problem:
        print(f"htx storage copy: the destination: {problem}", file=sys.stderr)
        return EXIT_FAILURE

    def progress(totals: Copied, outcome: Outcome) -> None:
        if outcome.action == REPLACED:
            print(f"replaced {outcome.key}: the destination held other bytes")
        if totals.done % PROGRESS_EVERY == 0 or totals.done == totals.total:
            print(f"{totals.done}/{totals.total} objects: {totals.copied} copied, {totals.already_there} already there", flush=True)

    try:
        result = copy_store(source, destination, config.work_dir, progress=progress)
    except OSError as error:
        print(f"htx storage copy: {store_problem(error)} (run it again once the store answers: what is copied stays)", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        # Never the success a stop is for other commands: the backend must not be switched now.
        print("htx storage copy: interrupted; run it again to go on (what is copied stays)", file=sys.stderr)
        return EXIT_FAILURE
    replaced = f", {result.replaced} in place of other bytes" if result.replaced else ""
    print(f"copied {_count(result.copied, 'object')} ({result.bytes_copied / 1e6:.1f} MB{replaced}), {result.already_there} already there")
    for mismatch in result.mismatches:
        print(f"htx storage copy: {mismatch.key}: {mismatch.problem}", file=sys.stderr)
    if result.mismatches:
        print(f"htx storage copy: {_count(len(result.mismatches), 'mismatch')}: keep storage.backend as it is", file=sys.stderr)
        return EXIT_FAILURE
    print(f'every object checked by its sha256: set storage.backend = "{args.to}", then start the daemons')
    return EXIT_OK


def _destination_problem(config: Config) -> str | None:
    """What keeps [storage.s3] from being a destination (checked at load only when it is the
    backend already)."""
    s3 = config.storage.s3
    if not s3.bucket:
        return "set storage.s3.bucket (and endpoint, credentials) first: that bucket is where the copy goes"
    if s3.endpoint.startswith("http://") and not s3.allow_http:
        return "storage.s3.allow_http: must be true for an http:// endpoint (credentials go in the clear)"
    return None


def store_problem(error: OSError) -> str:
    """A store's fault in one line: an object store's own words, else the path's."""
    return getattr(error, "problem", None) or path_problem(error)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
