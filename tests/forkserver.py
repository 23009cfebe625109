"""`python ARGS` for the tests, forked from a process that has already imported torch, Lightning,
Hydra and mlplab: a CLI test then costs its run, not the ~9 s of imports every fresh interpreter
pays here (most of the suite's time when each run was a new interpreter).

The child is still a process of its own: own pid, cwd, environment, stdin from /dev/null,
stdout and stderr captured, exit status as `subprocess.run` reports it (negative for a signal),
`atexit` handlers run at exit. The server only imports: it never runs a torch op nor starts a
Python thread, so there is no thread pool to break by forking (the OpenBLAS pools numpy and
scipy start at import are fork-safe, as DataLoader's fork workers rely on). What the imports
print to stderr is put in front of each child's stderr, as a fresh interpreter would print it.

Tests that need a real interpreter (signals sent to a Popen, DDP's relaunch of sys.argv) use
subprocess directly. MLPLAB_TEST_FORK=0 runs every call in a fresh interpreter instead.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What src/train.py, src/eval.py, src/predict.py, `-m mlplab.*` import before they do anything.
PRELOAD = ["torch", "lightning", "hydra", "omegaconf", "mlplab.cli", "mlplab.training", "mlplab.evaluation",
           "mlplab.bench", "mlplab.inspect", "mlplab.sweeps", "mlplab.data.sources"]


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _child(req: dict) -> None:
    """Runs in the fork: becomes `python ARGS` and never returns."""
    import runpy
    import threading

    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["out"], os.O_WRONLY | os.O_TRUNC),
                            (2, req["err"], os.O_WRONLY | os.O_APPEND)):
        os.dup2(os.open(path, flags), fd)
    args: list[str] = req["args"]
    code = 0
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            sys.path[0] = os.getcwd()
            # Preloaded, the module would be run a second time, and runpy warns about that.
            for name in (args[1], f"{args[1]}.__main__"):
                sys.modules.pop(name, None)
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            sys.path[0] = str(Path(args[0]).resolve().parent)
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - an interpreter reports any uncaught error and exits 1
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads, as at exit
    except Exception:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def serve() -> None:
    """Reads one JSON request per line on stdin; answers {"pid"} at once and {"status"} at exit."""
    requests = os.fdopen(0, "rb", buffering=0)
    answers = os.fdopen(1, "wb", buffering=0)
    for name in PRELOAD:
        __import__(name)
    sys.stderr.flush()
    answers.write(b'{"ready": true}\n')
    while line := requests.readline():
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _child(req)
            finally:
                os._exit(70)
        answers.write(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")


class _Server:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mlplab-forkserver-"))
        self.preamble = self.dir / "imports.err"
        with open(self.preamble, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=ROOT, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err)
        atexit.register(self.close)
        assert json.loads(self._read(600)) == {"ready": True}, self.preamble.read_text()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the server's loop ends at EOF
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _read(self, timeout: float | None) -> bytes:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died: {self.preamble.read_text()[-3000:]}")
        return line

    def run(self, args: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float | None
            ) -> subprocess.CompletedProcess[str]:
        assert self.proc.stdin is not None
        out, err = self.dir / "out", self.dir / "err"
        out.write_bytes(b"")
        err.write_bytes(self.preamble.read_bytes())
        req = {"args": list(args), "cwd": str(cwd), "env": dict(env), "out": str(out), "err": str(err)}
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        pid = json.loads(self._read(60))["pid"]
        try:
            status = json.loads(self._read(timeout))["status"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._read(60)
            raise subprocess.TimeoutExpired([sys.executable, *args], timeout or 0, _text(out), _text(err)) from None
        return subprocess.CompletedProcess([sys.executable, *args], status, _text(out), _text(err))


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


_server: _Server | None = None


def run_python(args: Sequence[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None,
               timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([sys.executable, *args], capture_output=True, text=True, ...)`, forked."""
    global _server
    env = dict(os.environ if env is None else env)
    if os.environ.get("MLPLAB_TEST_FORK", "1") == "0":
        return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    if _server is None or _server.proc.poll() is not None:
        _server = _Server()
    return _server.run(args, Path(cwd), env, timeout)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
