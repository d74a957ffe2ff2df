"""What `htx check-config` looks at beyond the file itself: whether what the settings name is
there and usable by the user the command runs as (through the admin wrapper: the service's).
Each finding is one line a person can act on."""

from __future__ import annotations

import os
from pathlib import Path

from models.config import Config
from models.files import current_user


def findings(config: Config) -> list[str]:
    """The problems found, each in one line with its fix; [] when none."""
    found = _folder_findings(config)
    found += _model_findings(config)
    found += _store_findings(config)
    return found


def _folder_findings(config: Config) -> list[str]:
    found = []
    folders = [("data folder (paths.data_dir)", config.data_dir), ("inbox (paths.inbox)", config.inbox_dir)]
    if config.trash_dir is not None:
        folders.append(("trash (paths.trash)", config.trash_dir))
    for label, folder in folders:
        problem = _folder_problem(folder)
        if problem:
            found.append(f"{label} {folder}: {problem}")
    return found


def _folder_problem(folder: Path) -> str | None:
    """Why the daemon could not write in `folder` (or make it), as this user; None if it can."""
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"not writable by the user {current_user()}; to fix: chown {current_user()}: {folder}"
        return None
    if folder.exists() or folder.is_symlink():
        return "not a folder"
    parent = next((above for above in folder.parents if above.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist, and the user {current_user()} cannot make it; to fix: install -d -o {current_user()} {folder}"
    return None  # made at the first start


def _model_findings(config: Config) -> list[str]:
    from daemon.captions.errors import CaptionerUnavailable
    from daemon.captions.model_source import check_present, model_source
    from models.text_embedder import SearchModelUnavailable, TextEmbedder

    findings = []
    if config.caption.enabled:
        try:
            check_present(model_source(config.caption.model, config.base_dir))
        except CaptionerUnavailable as error:
            findings.append(str(error))
    if config.search.enabled:
        try:
            TextEmbedder(config.search.model, config.base_dir).check_present()
        except SearchModelUnavailable as error:
            findings.append(str(error))
    return findings


def _store_findings(config: Config) -> list[str]:
    if config.storage.backend == "folder":
        return []
    from models.store import StoreProblem
    from models.stores import open_store

    try:
        open_store(config).check()
    except StoreProblem as problem:
        return [f"storage.s3: {problem.problem} (bucket {config.storage.s3.bucket}, {config.storage.s3.endpoint or 'AWS S3'})"]
    return []
