"""The personal pool's image: a Debian sid tree with HTCondor (``minicondor``), built once and cached.

``debootstrap --variant=minbase sid`` plus :data:`PACKAGES`, user ``larkuser`` (uid 2001) and a venv
``/opt/lark/venv`` holding Lark's runtime dependencies from PyPI. Built into ``CACHE_ROOT/build-*`` under an
exclusive ``flock`` and renamed to ``CACHE_ROOT/image-<key>`` when complete, where ``<key>`` hashes the
package lists and the recipe's source (:func:`_build_image`): an interrupted build never leaves a half
image, and editing the recipe builds a new one by itself. Every pool (:mod:`lark.pool.node`) runs on an
overlay of it, so the image itself is never written after the build.
"""

from __future__ import annotations

import configparser
import fcntl
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from lark.pool import util
from lark.pool.util import HOST_PATH, PoolError, file_tail, log, remove_tree, try_lock, umount_all
from lark.pool.util import run_host as _host  # the recipe's source (part of the image key) names it so

#: the source tree Lark runs from in a pool (bind-mounted read-only at SRC); `lark pool` needs a checkout
REPO = Path(__file__).resolve().parents[2]
CACHE_ROOT = Path(os.environ.get("LARK_TESTPOOL_CACHE", "/var/cache/lark-testpool"))

# ---- what goes into the image: extend these lists (the image key changes and it is rebuilt) -------------------
SUITE = "sid"
PACKAGES: tuple[str, ...] = (
    "minicondor", "python3", "python3-venv", "python3-pip", "iproute2", "nftables", "iptables",
    "procps", "ca-certificates",
    # python-iptables (Lark's optional iptables backend) builds a C extension: take Debian's build (no gcc here)
    "python3-iptables",
    # container-universe jobs: apptainer runs them (the startd's HasSingularity/HasSIF tests need it); the
    # static busybox is the whole userland of the test images, iperf3 the benchmark's traffic tool
    "apptainer", "busybox-static", "iperf3",
    # the transfer service's movers (lark/transfer/jobs.py): globus-url-copy, curl, xrdcp and xrdfs
    "globus-gass-copy-progs", "curl", "xrootd-client",
)
#: space-separated extra Debian packages for a one-off try, e.g. LARK_TESTPOOL_EXTRA_PACKAGES="strace tcpdump"
EXTRA_PACKAGES: tuple[str, ...] = tuple(os.environ.get("LARK_TESTPOOL_EXTRA_PACKAGES", "").split())
PIP_PACKAGES: tuple[str, ...] = ("pyroute2>=0.9", "pyyaml>=6", "requests>=2.28", "prometheus-client>=0.17")
#: tried one by one, a failure is only logged
PIP_OPTIONAL: tuple[str, ...] = ()

USER = "larkuser"
USER_ID = 2001
VENV = "/opt/lark/venv"
SRC = "/opt/lark/src"
TOKENS = "/etc/lark/tokens"
MASTER_PID = "/run/condor/master.pid"
CONDOR_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONSOLE_SCRIPTS: dict[str, str] = {
    "lark": "lark.cli.main:main",
    "lark-netd": "lark.broker.main:main",
    "lark-links": "lark.links.cron:main",
    "lark-spider": "perfsonar.main:main",
}

# Written into the image: a master started by hand in it still cannot tune the host kernel.
SAFETY_CONFIG = """\
# Lark test pool: the condor_master runs as root and shares /proc/sys with the host.
ENABLE_KERNEL_TUNING = False
"""


def image_key() -> str:
    """Hash of everything that goes into the image: package lists, constants and the recipe's source."""
    recipe = {
        "suite": SUITE,
        "packages": sorted(set(PACKAGES + EXTRA_PACKAGES)),
        "pip": list(PIP_PACKAGES),
        "pip_optional": list(PIP_OPTIONAL),
        "user": [USER, USER_ID],
        "venv": VENV,
        "safety": SAFETY_CONFIG,
        "source": inspect.getsource(_build_image),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def image_path() -> Path:
    return CACHE_ROOT / f"image-{image_key()}"


def image_info(image: Path) -> dict[str, Any]:
    return json.loads((image / "etc/lark-testpool-image.json").read_text())


def _chroot(root: Path, argv: Sequence[str], *, out: IO[str], timeout: float = 600.0,
            env: Mapping[str, str] | None = None) -> None:
    base = {"PATH": CONDOR_PATH, "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
    envs = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
    _host(["chroot", str(root), "/usr/bin/env", "-i", *envs, *argv], out=out, timeout=timeout)


def _build_image(dest: Path, out: IO[str]) -> None:
    """The recipe (its source text is part of the image key). ``dest`` is a fresh, empty build directory."""
    t0 = time.monotonic()
    _host(["debootstrap", "--variant=minbase", SUITE, str(dest)], out=out, timeout=900)
    t_debootstrap = time.monotonic() - t0
    (dest / "etc/apt/apt.conf.d/99lark-no-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
    policy = dest / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copyfile("/etc/hosts", dest / "etc/hosts")
    shutil.copyfile("/etc/resolv.conf", dest / "etc/resolv.conf")
    packages = sorted(set(PACKAGES + EXTRA_PACKAGES))
    _host(["mount", "-t", "proc", "lark-build-proc", str(dest / "proc")])
    try:
        t1 = time.monotonic()
        _chroot(dest, ["apt-get", "update"], out=out)
        _chroot(dest, ["apt-get", "install", "-y", "--no-install-recommends", *packages], out=out, timeout=1200)
        t_apt = time.monotonic() - t1
        # The Debian condor package lacks the SIF the startd's apptainer test runs (exit_37.sif): without
        # it the slot never advertises HasSIF, and condor_submit requires HasSIF of every .sif job. Build
        # it from the test sandbox the package does ship (a squashfs step only, no namespaces needed).
        # apptainer looks up the mount point of its temporary directory, and the build tree's /tmp is none.
        sandbox = "/usr/libexec/condor/singularity_test_sandbox/"
        sif = dest / "usr/libexec/condor/exit_37.sif"
        if not sif.exists():
            if not (dest / sandbox.lstrip("/")).is_dir():
                raise PoolError(f"the condor package has neither {sif.name} nor {sandbox} to build it from: "
                                "container-universe jobs could never match (no HasSIF)")
            _host(["mount", "-t", "tmpfs", "lark-build-tmp", str(dest / "tmp")])
            try:
                _chroot(dest, ["apptainer", "build", "/usr/libexec/condor/exit_37.sif", sandbox], out=out)
            finally:
                _host(["umount", str(dest / "tmp")], check=False)
            if not sif.exists():
                raise PoolError(f"apptainer build did not produce {sif}")
        _chroot(dest, ["groupadd", "-g", str(USER_ID), USER], out=out)
        _chroot(dest, ["useradd", "-m", "-u", str(USER_ID), "-g", str(USER_ID), "-s", "/bin/bash", USER], out=out)
        conf_d = dest / "etc/condor/config.d"
        (conf_d / "01-lark-safety.conf").write_text(SAFETY_CONFIG)
        # Lark's venv sees the Debian package's htcondor2/classad2 through --system-site-packages.
        t2 = time.monotonic()
        _chroot(dest, ["python3", "-m", "venv", "--system-site-packages", VENV], out=out)
        pip_env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1", "PIP_DEFAULT_TIMEOUT": "60"}
        host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_ca.exists():  # an intercepting egress proxy's CA is in the host bundle, not in the chroot's
            shutil.copyfile(host_ca, dest / "etc/lark-build-ca.pem")
            pip_env["PIP_CERT"] = "/etc/lark-build-ca.pem"
        _chroot(dest, [f"{VENV}/bin/pip", "install", *PIP_PACKAGES], out=out, env=pip_env)
        optional_ok = []
        for spec in PIP_OPTIONAL:
            try:
                _chroot(dest, [f"{VENV}/bin/pip", "install", spec], out=out, env=pip_env)
                optional_ok.append(spec)
            except PoolError as exc:
                out.write(f"optional package {spec} not installed: {exc}\n")
        (dest / "etc/lark-build-ca.pem").unlink(missing_ok=True)
        t_venv = time.monotonic() - t2
        imports = "import htcondor2, classad2, pyroute2, yaml, requests, iptc"
        _chroot(dest, [f"{VENV}/bin/python", "-c", imports], out=out)
        _chroot(dest, ["apt-get", "clean"], out=out)
        condor = _host(["chroot", str(dest), "/usr/bin/condor_version"]).stdout.splitlines()[0]
        python = _host(["chroot", str(dest), f"{VENV}/bin/python", "-c",
                        "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    finally:
        _host(["umount", "-R", "-l", str(dest / "proc")], check=False)
    info = {
        "key": image_key(), "suite": SUITE, "packages": packages, "pip": list(PIP_PACKAGES) + optional_ok,
        "condor_version": condor, "python": python, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": {"debootstrap": round(t_debootstrap, 1), "apt": round(t_apt, 1), "venv": round(t_venv, 1),
                    "total": round(time.monotonic() - t0, 1)},
    }
    (dest / "etc/lark-testpool-image.json").write_text(json.dumps(info, indent=1) + "\n")


def ensure_image(force: bool = False) -> Path:
    """The cached image for the current recipe, built first if missing (about a minute). Thread/process safe."""
    if os.geteuid() != 0:
        raise PoolError("the HTCondor test pool needs root (debootstrap, mounts, namespaces)")
    for tool in ("debootstrap", "chroot", "nsenter", "unshare", "pivot_root", "mount", "ip"):
        if shutil.which(tool, path=HOST_PATH) is None:
            raise PoolError(f"host tool {tool!r} is missing; run ./scripts/setup.sh (it installs debootstrap)")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    final = image_path()
    lock_path = CACHE_ROOT / "build.lock"
    if final.is_dir() and not force:
        fd = try_lock(lock_path)
        if fd is not None:  # nobody is building: clean up after an interrupted build, if any
            try:
                _sweep_builds()
            finally:
                os.close(fd)
        return final
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a concurrent build
        _sweep_builds()  # we hold the lock: every build-* left is from an interrupted build
        if final.is_dir() and not force:
            return final
        if force and final.is_dir() and _image_in_use(final):
            raise PoolError(f"cannot rebuild {final}: a running pool uses it")
        # build commands inherit the lock: if this process is killed, the lock stays held until they are gone
        util.build_lock_fd = fd
        build = CACHE_ROOT / f"build-{image_key()}-{os.getpid()}"
        log_path = CACHE_ROOT / f"build-{image_key()}.log"
        log.warning("building the HTCondor test pool image %s (log: %s)", final, log_path)
        build.mkdir()
        try:
            with open(log_path, "w") as out:
                try:
                    _build_image(build, out)
                except (PoolError, subprocess.TimeoutExpired, OSError) as exc:
                    out.flush()
                    raise PoolError(f"building the test pool image failed: {exc}\n{file_tail(log_path, 40)}\n"
                                    "(needs the Debian mirror and PyPI; see docs/testing.md)") from exc
            if force and final.exists():
                old = final.with_name(final.name + f".old-{os.getpid()}")
                final.rename(old)
                remove_tree(old)
            build.rename(final)
        finally:
            util.build_lock_fd = None
            if build.exists():
                umount_all(build)
                remove_tree(build)
        _prune_images(keep=final)
        return final
    finally:
        util.build_lock_fd = None
        os.close(fd)


def _image_in_use(image: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return f"lowerdir={image}," in fh.read()


def _sweep_builds() -> None:
    for build in CACHE_ROOT.glob("build-*"):
        if build.is_dir():
            log.warning("removing interrupted build %s", build)
            umount_all(build)
            remove_tree(build)


def _prune_images(keep: Path) -> None:
    """Delete other images unless a running pool's overlay still uses them as its lower layer."""
    for image in CACHE_ROOT.glob("image-*"):
        if image != keep and image.is_dir() and not _image_in_use(image):
            log.warning("removing old image %s", image)
            remove_tree(image)
            (CACHE_ROOT / f"build-{image.name.removeprefix('image-')}.log").unlink(missing_ok=True)


def console_scripts(repo: Path = REPO) -> dict[str, str]:
    """``name -> module:function`` from the repository's setup.cfg (fallback: CONSOLE_SCRIPTS)."""
    parser = configparser.ConfigParser()
    try:
        parser.read(repo / "setup.cfg")
        text = parser.get("options.entry_points", "console_scripts")
    except (configparser.Error, OSError):
        return dict(CONSOLE_SCRIPTS)
    scripts = {}
    for line in text.splitlines():
        if "=" in line:
            name, target = (part.strip() for part in line.split("=", 1))
            scripts[name] = target
    return scripts or dict(CONSOLE_SCRIPTS)


def plain_scripts(repo: Path = REPO) -> list[Path]:
    """Files listed as ``scripts`` in setup.cfg's [options] (installed as they are, e.g. lark-wrap)."""
    parser = configparser.ConfigParser()
    try:
        parser.read(repo / "setup.cfg")
        text = parser.get("options", "scripts")
    except (configparser.Error, OSError):
        return []
    return [repo / line.strip() for line in text.splitlines() if line.strip()]


