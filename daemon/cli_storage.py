"""The `htx storage` commands: gc (objects no record names) and copy (an install moved
between the data folder and a bucket)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from daemon.cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, open_database, path_problem
from models.config import Config


def cmd_storage_gc(config: Config, args: argparse.Namespace) -> int:
    from models.store_sweep import find_orphans, remove_orphans
    from models.stores import open_store

    engine = open_database(config, "storage gc", readonly=True)  # it changes the store, never a record
    if engine is None:
        return EXIT_FAILURE
    store = open_store(config)
    try:
        with engine.connect() as connection:
            sweep = find_orphans(store, connection, min_age_s=args.min_age_s)
        for orphan in sweep.orphans:
            print(orphan.key)
        size_mb = sum(orphan.size for orphan in sweep.orphans) / 1e6
        young = f"; {sweep.kept_young} younger than {args.min_age_s:.0f} s kept" if sweep.kept_young else ""
        if not args.delete:
            hint = "; run with --delete to remove them" if sweep.orphans else ""
            print(f"{len(sweep.orphans)} orphan(s), {size_mb:.1f} MB, among {sweep.named} named object(s){young}{hint}")
            return EXIT_OK
        removed = remove_orphans(store, sweep.orphans)
        print(f"removed {removed} orphan(s), {size_mb:.1f} MB; {sweep.named} named object(s) kept{young}")
        return EXIT_OK
    except OSError as error:
        print(f"htx storage gc: the store: {_store_problem(error)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        engine.dispose()


def cmd_storage_copy(config: Config, args: argparse.Namespace) -> int:
    from models.store_copy import copy_store
    from models.stores import open_store

    if args.to == config.storage.backend:
        print(f"htx storage copy: storage.backend is {args.to!r} already: copy --to the other one", file=sys.stderr)
        return EXIT_USAGE
    if args.to == "s3" and not config.storage.s3.bucket:
        print("htx storage copy: set storage.s3 (bucket, endpoint, ...) first: that is where the copy goes", file=sys.stderr)
        return EXIT_USAGE
    target = dataclasses.replace(config, storage=dataclasses.replace(config.storage, backend=args.to))
    source, destination = open_store(config), open_store(target)

    def progress(number: int, copied: object) -> None:
        if number % 100 == 0:
            print(f"  {number} object(s) looked at", file=sys.stderr)

    try:
        result = copy_store(source, destination, config.work_dir, progress)
    except OSError as error:
        print(f"htx storage copy: {_store_problem(error)}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"copied {result.copied} object(s) ({result.bytes_copied / 1e6:.1f} MB) into {args.to}; {result.already_there} already there with the same bytes")
    for problem in result.mismatched:
        print(f"htx storage copy: sha256 mismatch: {problem}", file=sys.stderr)
    if result.mismatched:
        return EXIT_FAILURE
    print(f'every object checked by its sha256: set storage.backend = "{args.to}" and start the daemons')
    return EXIT_OK


def _store_problem(error: OSError) -> str:
    return getattr(error, "problem", None) or path_problem(error)


def add_storage_commands(commands: argparse._SubParsersAction, command) -> None:  # type: ignore[type-arg]
    storage = command(commands, "storage", "the store of originals and thumbnails: find orphans, move to or from a bucket")
    actions = storage.add_subparsers(dest="action", metavar="ACTION", required=True)
    gc = command(actions, "gc", "list the objects no record names (a crash's leftovers); --delete removes them", cmd_storage_gc)
    gc.add_argument("--delete", action="store_true", help="remove them (default: only list them)")
    gc.add_argument("--min-age-s", type=float, default=3600.0, metavar="S",
                    help="leave objects younger than this alone (default 3600: a registration puts before it commits)")
    copy = command(
        actions, "copy",
        "copy every object into the other store (stop the daemons first; switch storage.backend after), checking each sha256",
        cmd_storage_copy,
    )
    copy.add_argument("--to", required=True, choices=("s3", "folder"), help="s3: the bucket of [storage.s3]; folder: paths.data_dir")
