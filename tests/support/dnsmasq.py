"""A real DHCP server and router advertiser for a test's site segment: dnsmasq (Debian's
``dnsmasq-base``) in a namespace, started and stopped by its pid. Its log and lease file are the
test's own view of what a job's DHCP client did (leases, renewals, releases)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.netns import in_ns
from tests.support.waiting import wait_until


class Dnsmasq:
    def __init__(self, netns: str, workdir: Path, interface: str, first: str, last: str) -> None:
        """Serves DHCPv4 from ``first``-``last`` (two-minute leases, dnsmasq's shortest) and router
        advertisements of every /64 on ``interface``, in the namespace at path ``netns``."""
        self.netns, self.dir, self.interface = netns, workdir, interface
        self.first, self.last = first, last
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "dnsmasq.log"
        self.leases = workdir / "dnsmasq.leases"

    def start(self, last: str | None = None, extra: tuple[str, ...] = ()) -> None:
        """``last``: a shorter range for this start (an exhausted pool); ``extra``: more options."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--port=0", "--bind-interfaces", f"--interface={self.interface}", "--dhcp-authoritative",
                "--log-dhcp", f"--dhcp-range={self.first},{last or self.last},255.255.255.0,2m",
                f"--dhcp-leasefile={self.leases}", f"--log-facility={self.log}", "--pid-file", "--enable-ra",
                f"--dhcp-range=::,constructor:{self.interface},ra-only", *extra]
        self.proc = subprocess.Popen(in_ns(self.netns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a client that asks before the server listens loses its first discovers
        wait_until("dnsmasq listening", lambda: "sockets bound exclusively" in self.log.read_text(), 10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def lease_lines(self) -> list[list[str]]:
        """<expiry> <mac> <address> <hostname> <client id> per lease."""
        try:
            return [line.split() for line in self.leases.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def said(self, fragment: str) -> bool:
        return fragment in self.log.read_text()
