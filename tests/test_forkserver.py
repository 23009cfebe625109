"""The tests' forked `python ARGS` answers as a fresh interpreter does (MLPLAB_TEST_FORK=0)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from forkserver import run_python

SCRIPT = """
import atexit, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
print("out", os.getcwd(), os.environ.get("FORK_PROBE"), sys.argv[1:])
print("err", file=sys.stderr)
if sys.argv[1] == "raise":
    raise ValueError("boom")
if sys.argv[1] == "signal":
    import signal
    os.kill(os.getpid(), signal.SIGTERM)
if sys.argv[1] == "sleep":
    import time
    time.sleep(30)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(params=["fork", "fresh"])
def script(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPLAB_TEST_FORK", "1" if request.param == "fork" else "0")
    path = tmp_path / "probe.py"
    path.write_text(SCRIPT)
    return path


def test_output_status_cwd_env_and_atexit(script: Path, tmp_path: Path) -> None:
    r = run_python([str(script), "3"], cwd=tmp_path, env={"FORK_PROBE": "x"})
    assert r.returncode == 3
    assert r.stdout == f"out {tmp_path} x ['3']\natexit ran\n"
    assert r.stderr.endswith("err\n")


def test_an_uncaught_error_exits_1_with_its_traceback(script: Path) -> None:
    r = run_python([str(script), "raise"])
    assert r.returncode == 1 and "Traceback" in r.stderr and r.stderr.endswith("ValueError: boom\n")


def test_a_signal_is_a_negative_status(script: Path) -> None:
    assert run_python([str(script), "signal"]).returncode == -15


def test_a_timeout_raises_as_subprocess_run_does(script: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_python([str(script), "sleep"], timeout=1)
    assert run_python([str(script), "0"]).returncode == 0  # and the next call still runs
