"""How fast a client can guess the read token (not a test).

    .venv/bin/python bench/guesses.py             # 5 s of wrong tokens on one connection
    .venv/bin/python bench/guesses.py --seconds 10

Starts one `htx api` on a temporary data folder with a read token set, then sends wrong
`Authorization: Bearer` tokens to /api/stats one after another on one kept-alive connection,
and prints the guesses answered per second and how they were answered (401: a guess checked,
429: held back).
"""

from __future__ import annotations

import argparse
import collections
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.api.live import free_port  # noqa: E402
from tests.helpers import wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config_file = Path(folder) / "htx.toml"
        token = secrets.token_hex(16)
        config_file.write_text(f'[paths]\ndata_dir = "data"\n[api]\nport = {port}\nread_token = "{token}"\n')
        server = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config_file), "api"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: _up(base), timeout=30, what="htx api")
            answers: collections.Counter[int] = collections.Counter()
            with httpx.Client(base_url=base) as client:
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    guess = secrets.token_hex(16)
                    response = client.get("/api/stats", headers={"Authorization": f"Bearer {guess}"})
                    answers[response.status_code] += 1
            total = sum(answers.values())
            print(f"{total / args.seconds:,.0f} requests/s on one connection; answers: {dict(answers)}")
            print(f"{answers[401] / args.seconds:,.1f} guesses/s checked (401)")
        finally:
            server.terminate()
            server.wait(30)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
