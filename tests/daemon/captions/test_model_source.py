"""A model folder the daemon may not read (copied as root: root's 0600 files) is said to be
that, with the fix, not "No such file or directory"; checked as another user, for real."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.captions.errors import CaptionerUnavailable
from daemon.captions.model_source import check_present, model_source, unreadable_files


def _as_user(name: str, check) -> str:
    """What `check()` raises (its message) in a child process that runs as the user `name`."""
    user = pwd.getpwnam(name)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: the interpreter is loaded already, only the user changes
        os.close(reader)
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            try:
                check()
                said = "no error"
            except CaptionerUnavailable as error:
                said = str(error)
            except BaseException as error:  # noqa: BLE001 - said to the parent, which fails on it
                said = f"unexpected {type(error).__name__}: {error}"
            os.write(writer, said.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        said = answer.read().decode()
    os.waitpid(child, 0)
    return said


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may reach (pytest's own temp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="htx-model-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


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

    said = _as_user("nobody", lambda: check_present(source))
    assert "permission denied to the user nobody for model.safetensors" in said, said
    assert f"to fix: chown -R nobody: {folder}" in said
    (folder / "model.safetensors").chmod(0o644)
    assert _as_user("nobody", lambda: check_present(source)) == "no error"
