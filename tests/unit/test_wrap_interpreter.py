"""Which Python runs ``lark-wrap``: the one of Lark's environment, beside the script, not the system's.

The wrapper is installed into the environment's ``bin/`` (``$(LARK_BIN)``). On EL8/EL9 the
system ``/usr/bin/python3`` is 3.6/3.9, older than Lark's, so the wrapper must not depend on it.
Here the system interpreter is made unusable for real: in a private mount namespace
``/usr/bin/python3`` is ``/bin/false``. The environment is a ``venv --copies`` (its ``python3`` is
its own binary, not a link to the system's). The wrapper talks to a socket server that answers
with the broker's own encoder (:func:`lark.broker.protocol.encode_reply`); the job reports the
command line of its parent, which is the wrapper itself (it stays the job's parent).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lark.broker.protocol import encode_reply, parse_request, wants_lines

REPO = Path(__file__).resolve().parents[2]


class LineServer:
    """Answers each request line the way the broker encodes it; records the ops asked."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.ops: list[str] = []
        self.env = env
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = parse_request(conn.makefile("rb").readline())
                op = str(request.get("op")) if isinstance(request, dict) else "?"
                self.ops.append(op)
                env = self.env if op == "setup" else {}
                conn.sendall(encode_reply({"ok": True, "env": env}, lines=wants_lines(request)))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def environment(tmp_path: Path) -> Path:
    """A venv of copies with lark-wrap installed in its bin/ as pip does (the file, executable)."""
    venv = tmp_path / "lark"
    subprocess.run([sys.executable, "-m", "venv", "--copies", "--without-pip", str(venv)], check=True)
    wrapper = venv / "bin" / "lark-wrap"
    shutil.copyfile(REPO / "lark" / "wrap.py", wrapper)
    wrapper.chmod(0o755)
    return venv


@pytest.fixture
def server(tmp_path: Path, environment: Path) -> Iterator[LineServer]:
    path = tmp_path / "netd.sock"
    (environment / "bin" / "lark-wrap.conf").write_text(f"socket = {path}\nretry_seconds = 2\n")
    srv = LineServer(path, {"LARK_NETWORK_TYPE": "nat", "LARK_IPV4_ADDRESS": "10.250.0.2"})
    yield srv
    srv.close()


JOB = 'echo "type=$LARK_NETWORK_TYPE"; echo "parent=$(tr "\\0" " " < /proc/$PPID/cmdline)"; ' \
      '/usr/bin/python3 -c pass; echo "system-python-exit=$?"'


def run_without_system_python(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` in a private mount namespace where /usr/bin/python3 is /bin/false."""
    script = 'mount --bind /bin/false /usr/bin/python3 && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv],
                          capture_output=True, text=True, timeout=60)


def test_the_wrapper_runs_the_job_under_its_environments_python_when_the_system_one_is_unusable(
        require_root: None, environment: Path, server: LineServer) -> None:
    wrapper = environment / "bin" / "lark-wrap"
    proc = run_without_system_python([str(wrapper), "sh", "-c", JOB])
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert lines["type"] == "nat"  # the broker's reply reached the job
    assert lines["system-python-exit"] == "1"  # the system interpreter really was unusable
    parent = lines["parent"].split()
    assert parent[:3] == [str(environment / "bin" / "python3"), "-I", "-S"]
    assert parent[3] == str(wrapper)
    assert server.ops == ["setup", "finalize"]
    assert "no python3 next to" not in proc.stderr


def test_without_a_python_beside_it_the_wrapper_says_so_and_uses_the_systems(
        tmp_path: Path, environment: Path, server: LineServer) -> None:
    (environment / "bin" / "python3").unlink()
    proc = subprocess.run([str(environment / "bin" / "lark-wrap"), "sh", "-c", JOB], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "lark-wrap: no python3 next to" in proc.stderr
    parent = dict(line.split("=", 1) for line in proc.stdout.splitlines())["parent"].split()
    assert parent[:3] == ["/usr/bin/python3", "-I", "-S"]
    assert server.ops == ["setup", "finalize"]


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_answer_without_asking_the_broker(flag: str, environment: Path, server: LineServer) -> None:
    proc = subprocess.run([str(environment / "bin" / "lark-wrap"), flag], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert server.ops == []
    if flag == "--help":
        assert proc.stdout.startswith("usage: lark-wrap JOB")
    else:
        # this venv has no Lark installed (only the script was copied): the wrapper says so, not a guess
        assert proc.stdout.startswith("lark-wrap unknown (the lark package is not importable")


def test_the_checkout_wrapper_reports_the_packages_version() -> None:
    from lark import __version__

    proc = subprocess.run([str(REPO / "hooks" / "lark-wrap"), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.strip() == f"lark-wrap {__version__}"


def test_the_wrapper_is_valid_python_37() -> None:
    """The fallback interpreter may be as old as 3.7 (annotations are strings there, not evaluated)."""
    import ast

    ast.parse((REPO / "lark" / "wrap.py").read_text(), feature_version=(3, 7))
