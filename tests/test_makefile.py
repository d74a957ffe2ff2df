"""The Makefile's two commands and `make install`: what each would run on a fresh clone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def planned(tmp_path: Path, *arguments: str) -> str:
    """What `make ARGUMENTS` would run in a fresh clone (no .venv yet), without running it."""
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    # As a user's shell runs it, also under `make test`: no settings of an enclosing make.
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("MAKE", "MFLAGS"))}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", *arguments],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_sets_up_htx_without_the_test_tools(tmp_path: Path) -> None:
    commands = planned(tmp_path, "install")
    assert "pip install --quiet torch==2.13.0 \n" in commands  # from the configured index
    assert "pip install --quiet -e .\n" in commands
    assert "[test]" not in commands and "pytest" not in commands


def test_the_tests_add_their_tools(tmp_path: Path) -> None:
    commands = planned(tmp_path, "test")
    assert "pip install --quiet -e .\n" in commands
    assert "pip install --quiet -e '.[test]'" in commands
    assert commands.rstrip().endswith("-m pytest")


def test_a_cpu_only_server_takes_torch_from_pytorchs_cpu_index(tmp_path: Path) -> None:
    commands = planned(tmp_path, "install", "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert "pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu\n" in commands
    # Everything else from the usual index.
    assert commands.count("--index-url") == 1
