"""The API never loads the daemon: what both use lives in models/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: in this one the tests have loaded the daemon already.
PROBE = (
    "import json, sys, api.app, api.server; "
    "print(json.dumps(sorted(name for name in sys.modules if name == 'daemon' or name.startswith('daemon.'))))"
)


def test_api_imports_no_daemon_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
