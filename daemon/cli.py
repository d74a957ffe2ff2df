"""The `htx` command. Loads the configuration once and passes it to what each command runs.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon.cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, open_database, path_problem, reason
from daemon.cli_model import cmd_model_download, cmd_model_verify, cmd_recaption
from daemon.cli_search import cmd_reindex
from daemon.cli_storage import COPY_NOTES, cmd_storage_copy, cmd_storage_gc, min_age
from models import config as config_module
from models.config import Config, ConfigError
from models.files import current_user

log = logging.getLogger("htx")

Command = Callable[[Config, argparse.Namespace], int]


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C), so the main loop can stop cleanly."""
    stop = threading.Event()

    def _handle(signum: int, _frame: object) -> None:
        log.info("%s received: finishing the work in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)
    return stop


def cmd_daemon(config: Config, args: argparse.Namespace) -> int:
    # First: a stop asked for while the imports below run (seconds: torch) is a clean stop too.
    stop = stop_event_on_signals()
    from daemon.notify import SystemdNotifier
    from daemon.service import Daemon

    daemon = Daemon(config, observe=not args.once)
    try:
        # Waits out a full disk or a locked database, saying so once, until stopped.
        started = daemon.start(stop)
        if started and args.once:
            while not daemon.wait_idle(timeout=0.5):
                if stop.is_set():
                    break
        elif started:
            daemon.run(stop, SystemdNotifier.from_environment())
    finally:
        daemon.stop()
    log.info("daemon stopped")
    if daemon.model_still_loading:
        # Everything is committed, but torch aborts the interpreter's exit (SIGABRT, a failed
        # unit) while one of its threads is loading weights: leave without waiting for it.
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


def cmd_ingest(config: Config, args: argparse.Namespace) -> int:
    from daemon import ingest

    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    try:
        copied = ingest.ingest(args.paths, config, out=sys.stderr)
    except FileNotFoundError as error:
        print(f"htx: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ingest.IngestError as error:
        print(f"htx ingest: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if not args.wait:
        print(f"{len(copied)} file(s) copied into {config.inbox_dir}")
        return EXIT_OK
    outcomes, complete = ingest.wait_for_outcomes(copied, config, timeout_s=args.timeout, out=sys.stderr)
    for line in ingest.summary_lines(copied, outcomes):
        print(line)
    return EXIT_OK if complete else EXIT_FAILURE


def cmd_reprocess(config: Config, args: argparse.Namespace) -> int:
    from models import actions
    from models.stores import open_store

    if not args.ids and not args.failed:
        print("htx reprocess: name image ids, or --failed for every failed image", file=sys.stderr)
        return EXIT_USAGE
    engine = open_database(config, "reprocess")
    if engine is None:
        return EXIT_FAILURE
    try:
        with engine.begin() as connection:
            reprocessing = actions.mark_for_reprocessing(connection, args.ids, failed_only=args.failed, store=open_store(config))
            # Named ids not queued, and any image of a --failed sweep left because its original is gone.
            left = sorted((set(args.ids) - set(reprocessing.marked)) | set(reprocessing.gone))
            statuses = actions.image_statuses(connection, left)
    finally:
        engine.dispose()
    print(f"{len(reprocessing.marked)} image(s) queued again; the running daemon takes them within seconds")
    for image_id in left:
        status = statuses.get(image_id)
        if status is None:
            reason = "there is no such image"
        elif status in ("pending", "processing"):
            reason = f"it is {status} already"
        elif args.failed and status != "failed":
            reason = f"it is {status}, not failed"
        else:
            reason = "its original is no longer stored (drop the same file into the inbox again to put it back, or delete the image)"
        print(f"htx reprocess: image {image_id} not queued: {reason}", file=sys.stderr)
    return EXIT_FAILURE if left else EXIT_OK


def cmd_stats(config: Config, args: argparse.Namespace) -> int:
    from daemon.database.records import utcnow
    from daemon.report import search_line, stats_table
    from models import embedding_reads, stats_reads, status_reads
    from models.text_embedder import search_model_source

    engine = open_database(config, "stats", readonly=True)
    if engine is None:
        return EXIT_FAILURE
    try:
        with engine.connect() as connection:
            now = utcnow()
            lines = stats_table(
                stats_reads.stats(connection, now=now),
                status_reads.daemon_status(connection),
                now=now,
                lease_s=config.pipeline.lease_s,
                captions_configured=config.caption.enabled,
            )
            model = search_model_source(config.search.model, config.base_dir).name if config.search.enabled else None
            lines.append(search_line(model, embedding_reads.counts(connection, model) if model else None))
    finally:
        engine.dispose()
    print("\n".join(lines))
    return EXIT_OK


def cmd_api(config: Config, args: argparse.Namespace) -> int:
    from api.server import serve

    return EXIT_OK if serve(config) else EXIT_FAILURE


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from daemon.supervisor import child_commands, run_together

    return run_together(child_commands(config.source))


def cmd_check_config(config: Config, args: argparse.Namespace) -> int:
    from models.db import display_url

    from daemon.config_checks import findings

    print(f"# configuration from {config.source or 'built-in defaults'}: valid")
    for section, values in config_module.as_dict(config).items():
        _print_table(section, values)
    print("\n# resolved paths")
    for label, path in (
        ("data_dir", config.data_dir),
        ("inbox", config.inbox_dir),
        ("database", display_url(config.database_url)),
        ("store", _store_shown(config)),
    ):
        print(f"# {label}: {path}")
    problems = findings(config)
    print(f"\n# checked as the user {current_user()}: " + (f"{len(problems)} problem(s)" if problems else "OK"))
    for problem in problems:
        print(f"# problem: {problem}")
    return EXIT_FAILURE if problems else EXIT_OK


def cmd_db_migrate(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from models import migrate
    from models.db import display_url, make_engine

    engine = make_engine(config.database_url)
    try:
        migrate.upgrade(engine)
    except DBAPIError as error:
        print(f"htx db migrate: {display_url(config.database_url)}: {reason(error)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        engine.dispose()
    print(f"{display_url(config.database_url)}: schema at revision {migrate.head_revision()}")
    return EXIT_OK


def cmd_db_copy(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from models.db import display_url, make_engine
    from models.transfer import TransferRefused, copy_records

    source = open_database(config, "db copy", readonly=True)
    if source is None:
        return EXIT_FAILURE
    target = make_engine(args.to)
    try:
        before, after = copy_records(source, target)
    except TransferRefused as error:
        print(f"htx db copy: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except DBAPIError as error:
        print(f"htx db copy: nothing copied: {reason(error)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        source.dispose()
        target.dispose()
    print(f"copied {after.images} image(s) into {display_url(args.to)}")
    print(f"{'':<10}{'source':>10}{'target':>10}")
    for status in sorted(set(before.by_status) | set(after.by_status)):
        print(f"{status:<10}{before.by_status.get(status, 0):>10}{after.by_status.get(status, 0):>10}")
    print(f"{'total':<10}{before.images:>10}{after.images:>10}")
    same = before == after
    print("the counts agree" if same else "htx db copy: THE COUNTS DIFFER: keep using the source", file=sys.stdout if same else sys.stderr)
    return EXIT_OK if same else EXIT_FAILURE


def _store_shown(config: Config) -> str:
    if config.storage.backend == "folder":
        return f"the data folder ({config.data_dir})"
    s3 = config.storage.s3
    where = s3.endpoint or "AWS S3"
    credentials = "credentials set" if s3.access_key_id else "credentials from the environment or the instance"
    return f"bucket {s3.bucket}{'/' + s3.prefix.strip('/') if s3.prefix.strip('/') else ''} at {where} ({credentials})"


# Shown as *** when set: never a secret on a terminal or in a log.
_SECRETS = {("api", "read_token"), ("api", "upload_token"), ("storage.s3", "access_key_id"), ("storage.s3", "secret_access_key")}


def _print_table(name: str, values: dict[str, object]) -> None:
    from models.db import display_url

    print(f"\n[{name}]")
    tables = {key: value for key, value in values.items() if isinstance(value, dict)}
    for key, value in values.items():
        if key in tables:
            continue
        if (name, key) == ("database", "url") and value:
            value = display_url(str(value))  # never a password
        elif (name, key) in _SECRETS and value:
            value = "***"
        print(f"{key} = {_toml_value(value)}")
    for key, table in tables.items():
        _print_table(f"{name}.{key}", table)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    config_help = f"configuration file (default: ${config_module.CONFIG_ENV}, else ./config.toml, else built-in defaults)"
    parser = argparse.ArgumentParser(
        prog="htx",
        description="HTX, an image inbox: watched folder and uploads to records with thumbnails and captions.",
    )
    parser.add_argument("--config", metavar="PATH", help=config_help)
    # Also accepted after the command (`htx stats --config FILE`); SUPPRESS keeps a value given
    # before the command when none follows it.
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=config_help)

    def command(group: Any, name: str, summary: str, handler: Command | None = None) -> argparse.ArgumentParser:
        """A subcommand whose one-line summary shows in its parent's --help and heads its own."""
        sub = group.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".", parents=[config_option])
        if handler is not None:
            sub.set_defaults(handler=handler)
        return sub

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    daemon = command(commands, "daemon", "watch the inbox and process every image (runs until stopped)", cmd_daemon)
    daemon.add_argument("--once", action="store_true", help="process what is in the inbox now, then exit")

    ingest = command(commands, "ingest", "copy files or folders into the inbox (--wait: follow them to done or failed)", cmd_ingest)
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders to copy")
    ingest.add_argument("--wait", action="store_true", help="wait for every file to be processed and summarise")
    ingest.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after this long (exit 1)")

    reprocess = command(commands, "reprocess", "process finished images again from their stored originals", cmd_reprocess)
    reprocess.add_argument("ids", nargs="*", type=int, metavar="ID", help="image ids")
    reprocess.add_argument("--failed", action="store_true", help="every failed image (or the failed ones among ID...)")

    command(commands, "api", "serve the read API and uploads on api.host:api.port (runs until stopped)", cmd_api)
    command(commands, "run", "run the daemon and the API together, stopping both on Ctrl-C", cmd_run)
    command(commands, "stats", "print counts, rates and processing times as a table", cmd_stats)
    command(commands, "check-config", "validate the configuration and print the effective settings", cmd_check_config)

    recaption = command(commands, "recaption", "caption done images again: all, only --missing ones, or the given ids", cmd_recaption)
    recaption.add_argument("--missing", action="store_true", help="only images without a caption")
    recaption.add_argument("ids", nargs="*", type=int, metavar="ID", help="image ids (default: every done image)")

    reindex = command(
        commands, "reindex", "embed the captions search by meaning waits for now, in the foreground (the daemon does it too)", cmd_reindex
    )
    reindex.add_argument("--all", action="store_true", help="embed every caption again, not only those waiting")
    reindex.add_argument("--forget-others", action="store_true", help="remove the embeddings of models other than search.model")

    database = command(commands, "db", "the database: create or upgrade its schema, copy it elsewhere")
    database_actions = database.add_subparsers(dest="action", metavar="ACTION", required=True)
    command(database_actions, "migrate", "create or upgrade the schema of database.url (the daemon also does it at start)", cmd_db_migrate)
    copy = command(
        database_actions, "copy", "copy every record into another, empty database (e.g. SQLite to PostgreSQL), then compare counts", cmd_db_copy
    )
    copy.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the target, e.g. postgresql+psycopg://htx@dbhost/htx (a password: PGPASSWORD or ~/.pgpass)",
    )

    storage = command(commands, "storage", "the store of originals and thumbnails: remove orphans, copy it into the other store")
    storage_actions = storage.add_subparsers(dest="action", metavar="ACTION", required=True)
    gc = command(storage_actions, "gc", "list the objects no record points to (a crash's leftovers); --delete removes them", cmd_storage_gc)
    gc.add_argument("--delete", action="store_true", help="remove them (default: only list them)")
    gc.add_argument("--min-age-s", type=min_age, default=3600.0, metavar="S", help="leave younger objects alone (default 3600: a registration puts before it commits)")
    store_copy = command(
        storage_actions, "copy", "copy every object into the other store, each checked by its sha256 (stop the daemons first; switch storage.backend after)", cmd_storage_copy
    )
    store_copy.epilog = COPY_NOTES
    store_copy.add_argument("--to", required=True, choices=("s3", "folder"), help="s3: the bucket of [storage.s3]; folder: paths.data_dir")

    model = command(commands, "model", "the caption and search models: fetch them for offline use")
    model_actions = model.add_subparsers(dest="action", metavar="ACTION", required=True)
    download = command(model_actions, "download", "fetch a hub model into the local Hugging Face cache (needs network access)", cmd_model_download)
    download.add_argument("name", nargs="?", metavar="NAME", help="hub id (default: caption.model, or search.model with --search)")
    download.add_argument("--search", action="store_true", help="the search model (search.model) rather than the caption model")
    command(model_actions, "verify", "hash the caption model and its compiled form again (a start checks sizes and times only)", cmd_model_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_module.load(args.config)
    except ConfigError as error:
        print(f"htx: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # a config file this user may not read
        print(f"htx: configuration file: {path_problem(error)}", file=sys.stderr)
        return EXIT_USAGE
    from daemon.logs import configure_logging

    configure_logging(config.log)
    handler: Command = args.handler
    try:
        return handler(config, args)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as error:
        # A path that is not there or not this user's: one line, never a traceback.
        print(f"htx {args.command}: {path_problem(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception:
        log.exception("htx %s failed", args.command)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
