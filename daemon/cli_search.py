"""`htx reindex`: embed by hand, in the foreground, the captions search by meaning still waits
for (what the daemons do in the background), saying how far it has got."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from daemon.cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, open_database
from models.config import Config

log = logging.getLogger("htx")

# How often the progress line is printed.
PROGRESS_S = 5.0


def cmd_reindex(config: Config, args: argparse.Namespace) -> int:
    if not config.search.enabled:
        print('htx reindex: search.model is "none": set it to a hub id or a model folder first', file=sys.stderr)
        return EXIT_USAGE
    from daemon.database import embeddings
    from daemon.database.writer import DatabaseWriter
    from daemon.roles.embedding import embed_waiting
    from models import embedding_reads
    from models.text_embedder import SearchModelUnavailable, TextEmbedder

    embedder = TextEmbedder(config.search.model, config.base_dir)
    try:
        embedder.load()
    except SearchModelUnavailable as error:
        log.error("%s", error)
        return EXIT_FAILURE
    engine = open_database(config, "reindex")
    if engine is None:
        return EXIT_FAILURE
    writer = DatabaseWriter(engine)
    writer.start()
    try:
        if args.all:
            forgotten = writer.call(embeddings.forget_model, embedder.key)
            print(f"forgot {forgotten} embedding(s) by {embedder.key}: every caption is embedded again")
        if args.forget_others:
            print(f"removed {writer.call(embeddings.forget_other_models, embedder.key)} embedding(s) of other models")
        started = last_print = time.monotonic()
        embedded = 0
        while (done := embed_waiting(writer, embedder, limit=config.search.batch_size)) > 0:
            embedded += done
            if time.monotonic() - last_print >= PROGRESS_S:
                last_print = time.monotonic()
                counts = writer.call(embedding_reads.counts, embedder.key)
                print(f"embedded {counts.embedded} of {counts.embedded + counts.waiting} caption(s)", flush=True)
        counts = writer.call(embedding_reads.counts, embedder.key)
    finally:
        writer.stop()
        engine.dispose()
    elapsed = time.monotonic() - started
    rate = f" ({embedded / elapsed:.0f} a second)" if embedded and elapsed > 0 else ""
    print(
        f"embedded {embedded} caption(s) with {embedder.key} in {elapsed:.1f} s{rate}; "
        f"{counts.embedded} image(s) searchable by meaning, {counts.waiting} waiting"
    )
    return EXIT_OK
