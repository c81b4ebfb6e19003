"""Running commands inside a test's own network namespaces and waiting for their listeners."""

from __future__ import annotations

import subprocess

from tests.support.waiting import wait_until


def in_ns(netns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside the namespace at path ``netns`` (the test process itself never moves)."""
    return ["nsenter", f"--net={netns}", *argv]


def wait_listening(netns: str, port: int, proto: str = "tcp", timeout: float = 10.0) -> None:
    """Wait until something listens on ``port`` in ``netns``; TimeoutError names port and namespace."""
    flag = "-ltn" if proto == "tcp" else "-lun"

    def listening() -> bool:
        out = subprocess.run(in_ns(netns, ["ss", "-H", flag, f"sport = :{port}"]), capture_output=True,
                             text=True).stdout
        return bool(out.strip())

    wait_until(f"a {proto} listener on port {port} in {netns}", listening, timeout)
