"""A model folder the daemon may not read (copied as root: root's 0600 files) is said to be
that, with the fix, not "No such file or directory"; checked as another user, for real."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from daemon.captions.errors import CaptionerUnavailable
from daemon.captions.model_source import check_present, model_source, unreadable_files
from tests.helpers import as_user


def test_a_model_copied_as_root_names_permission_and_the_chown_that_fixes_it(tiny_blip: Path, open_folder: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to copy the model as root and check it as another user")
    folder = open_folder / "blip"
    shutil.copytree(tiny_blip, folder, ignore=shutil.ignore_patterns("htx-compiled"))  # other tests compile it
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
    (folder / "model.safetensors").chmod(0o600)  # what `cp -r` as root keeps of a 0600 file
    source = model_source(str(folder), open_folder)
    assert unreadable_files(folder) == []  # root reads everything
    check_present(source)

    said = as_user("nobody", lambda: check_present(source), CaptionerUnavailable)
    assert "permission denied to the user nobody for model.safetensors" in said, said
    assert f"to fix: chown -R nobody: {folder}" in said
    (folder / "model.safetensors").chmod(0o644)
    assert as_user("nobody", lambda: check_present(source), CaptionerUnavailable) == "no error"
