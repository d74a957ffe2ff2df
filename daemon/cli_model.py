"""The `htx` commands of the caption model: recaption, model download, model verify."""

from __future__ import annotations

import argparse
import logging
import sys

from daemon.cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, open_database
from models.config import Config

log = logging.getLogger("htx")


def cmd_recaption(config: Config, args: argparse.Namespace) -> int:
    if not config.caption.enabled:
        print('htx recaption: caption.model is "none": set it to a hub id or a model folder first', file=sys.stderr)
        return EXIT_USAGE
    from daemon.captions.errors import CaptionerUnavailable
    from daemon.captions.factory import make_captioner
    from daemon.captions.recaption import recaption
    from daemon.database.writer import DatabaseWriter

    engine = open_database(config, "recaption")
    if engine is None:
        return EXIT_FAILURE
    captioner = make_captioner(config)
    try:
        captioner.load()
    except CaptionerUnavailable as error:
        engine.dispose()
        log.error("%s", error)
        return EXIT_FAILURE
    writer = DatabaseWriter(engine)
    writer.start()
    try:
        result = recaption(config, captioner, writer, missing=args.missing, ids=args.ids)
    finally:
        writer.stop()
        engine.dispose()
    for image_id in result.not_found:
        print(f"htx recaption: image {image_id} is not a done image", file=sys.stderr)
    failed = f"; {len(result.failed)} could not be captioned" if result.failed else ""
    print(f"recaptioned {result.captioned} image(s) with {captioner.model_name} ({captioner.settings}){failed}")
    return EXIT_FAILURE if result.failed or result.not_found else EXIT_OK


def cmd_model_download(config: Config, args: argparse.Namespace) -> int:
    from daemon.captions.blip import download
    from daemon.captions.model_source import model_source

    setting = "search.model" if args.search else "caption.model"
    name = args.name or (config.search.model if args.search else config.caption.model)
    if name == "none":
        example = "sentence-transformers/all-MiniLM-L6-v2" if args.search else "Salesforce/blip-image-captioning-base"
        print(f'htx model download: {setting} is "none"; name a model, e.g. {example}', file=sys.stderr)
        return EXIT_USAGE
    if model_source(name, config.base_dir).is_folder:
        print(f"htx model download: {name} is a folder, not a hub id: nothing to download", file=sys.stderr)
        return EXIT_USAGE
    try:
        folder = download(name)
    except Exception as error:  # network, unknown repo, offline mode: one line, not a traceback
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        log.error(
            "could not download %s: %s. This needs access to the Hugging Face hub; without it, copy the "
            "cache folder (~/.cache/huggingface/hub) from a machine that has the model, or set "
            "%s to a folder holding a saved model",
            name,
            first_line,
            setting,
        )
        return EXIT_FAILURE
    print(f"{name} is in the local cache ({folder}); the daemon loads it at its next start")
    return EXIT_OK


def cmd_model_verify(config: Config, args: argparse.Namespace) -> int:
    """Hash the caption model's checkpoint and its compiled form again, whatever the cheap
    check of a start (size, mtime, inode) says; a damaged compiled model is removed, and the
    daemon compiles it again at its next start."""
    import shutil

    from daemon.captions.blip import BlipCaptioner, resolve_runtime
    from daemon.captions.errors import CaptionerUnavailable

    if not config.caption.enabled:
        print('htx model verify: caption.model is "none": there is no model to verify', file=sys.stderr)
        return EXIT_USAGE
    if resolve_runtime(config.caption, "cpu") != "openvino":
        print("htx model verify: this configuration captions with torch, which keeps no compiled model")
        return EXIT_OK
    captioner = BlipCaptioner(config.caption, config.base_dir, cache_dir=config.data_dir)
    try:
        folder, problem = captioner.verify_compiled()
    except CaptionerUnavailable as error:
        print(f"htx model verify: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if problem is None:
        print(f"{captioner.model_name}: the checkpoint and its compiled model are intact ({folder})")
        return EXIT_OK
    if problem == "no compiled model yet":
        print(f"{captioner.model_name}: not compiled yet; the daemon compiles it at its next start ({folder})")
        return EXIT_OK
    shutil.rmtree(folder, ignore_errors=True)
    print(f"{captioner.model_name}: the compiled model was damaged ({problem}): removed; the daemon compiles it again at its next start")
    return EXIT_FAILURE
