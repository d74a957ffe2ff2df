"""`htx run`: the daemon and the API started and stopped together, through a real process."""

from __future__ import annotations

from pathlib import Path

from tests.api.live import Htx, write_config


def test_ctrl_c_stops_both_processes_cleanly_ten_times_in_a_row(tmp_path: Path) -> None:
    config_file = write_config(tmp_path / "htx")
    for attempt in range(1, 11):
        htx = Htx(config_file, "run")
        htx.wait_healthy()

        status = htx.interrupt()

        log = htx.log()
        assert status == 0, f"attempt {attempt}: exit status {status}\n{log}"
        # The log file gathers every attempt's lines.
        assert log.count("daemon stopped (exit status 0)") == attempt, log
        assert log.count("api stopped (exit status 0)") == attempt, log
        assert "Traceback" not in log
