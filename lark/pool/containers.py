"""Container images for a pool's jobs, without a registry: a SIF built in the pool from a directory.

:func:`build_sif` packs the pool's static busybox (and any binaries named, with their libraries) into a
SIF; :func:`wait_for_sif` waits for the startd's apptainer test (``HasSIF``); :func:`container_submit`
writes a container-universe submit file on a network profile.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lark.pool.util import PoolError

if TYPE_CHECKING:
    from lark.pool.node import Pool


#: a file at the root of every image built here: a job that can read it really runs inside the image
IMAGE_MARKER = "/lark-test-image"


def build_sif(pool: Pool, dest: str, binaries: Sequence[str] = ()) -> str:
    """Build a SIF image at ``dest`` (inside the pool) from a directory, without any registry.

    The image is the pool's static busybox (every applet as a symlink: sh, nc, ip, ...), a marker
    file (:data:`IMAGE_MARKER`) and the given dynamically linked ``binaries`` of the pool with the
    libraries ``ldd`` names for them and libgcc_s (e.g. iperf3 for the benchmark). Returns ``dest``.
    """
    work = f"{dest}.d"
    root = pool.root / work.lstrip("/")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home", "srv", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(pool.root / "bin/busybox", root / "bin/busybox")
    for applet in pool.run(["busybox", "--list"]).stdout.split():
        if applet != "busybox" and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    (root / IMAGE_MARKER.lstrip("/")).write_text("lark test image\n")
    # glibc dlopens libgcc_s for pthread_cancel (iperf3 uses it); ldd does not list it
    dlopened = [f"/{p.relative_to(pool.root)}" for p in pool.root.glob("usr/lib/*/libgcc_s.so.1")] if binaries else []
    for binary in binaries:
        needed = [binary, *dlopened] + [part for line in pool.run(["ldd", binary]).stdout.splitlines()
                                        for part in line.split() if part.startswith("/")]
        for path in needed:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            real = pool.run(["readlink", "-f", path]).stdout.strip()  # resolved inside the chroot, not the host
            shutil.copy2(pool.root / real.lstrip("/"), target)
    # apptainer only packs the directory: it needs neither namespaces nor the pivoted root for this
    pool.run(["apptainer", "-s", "build", "-F", dest, work], timeout=120)
    shutil.rmtree(root)
    (pool.root / dest.lstrip("/")).chmod(0o644)
    return dest


def wait_for_sif(pool: Pool, timeout: float = 90) -> None:
    """The startd tests apptainer at start-up; container jobs of .sif images need HasSIF."""
    deadline = time.monotonic() + timeout
    while True:
        slots = pool.status('MyType == "Machine"', ["HasSingularity", "HasSIF"])
        if slots and all(s.get("HasSIF") is True for s in slots):
            return
        if time.monotonic() > deadline:
            start_log = (pool.root / "var/log/condor/StartLog").read_text()[-3000:]
            raise PoolError(f"the startd never advertised HasSIF: {slots}\n{start_log}")
        time.sleep(0.5)


def container_submit(image: str, args: str, profile: str, inputs: Sequence[str] = (), count: int = 1) -> str:
    """A container-universe submit file running ``job.sh`` in ``image`` with a network profile; each
    job writes out.<Process>.txt and err.<Process>.txt in its directory."""
    transfer = f"transfer_input_files = {','.join(inputs)}\n" if inputs else ""
    return f"""universe = container
container_image = {image}
transfer_container = false
executable = job.sh
arguments = "{args}"
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
{transfer}output = out.$(Process).txt
error = err.$(Process).txt
log = job.log
+LarkNetworkProfile = "{profile}"
queue {count}
"""
