"""``lark doctor``: is Lark really active on this node? One verdict per fact, with the fix.

Two halves, like the rest of Lark: :func:`gather` is the edge (asks the broker, the running
startd and schedd, the collector and the kernel, and records what each answered, errors
included), and :func:`run_checks` is pure: it turns those :class:`NodeFacts` into
:class:`Check` verdicts, so every verdict is unit-tested on real answers without a pool.

What is checked depends on the node's role, read from ``DAEMON_LIST``: an execute node (a startd
or ``LARK_NETD``) needs the broker, ``NO_JOB_NETWORKING`` in effect in the *running* startd (it is
only applied when the startd starts), the slots advertising ``HasLark``, the chirp prefix, the
firewall backend and the kernel features of the modes it offers; a submit node (a schedd) needs the
job transforms active in the running schedd.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

from lark import __version__, attach, extra_hint
from lark.errors import LarkError
from lark.wrap import settings as wrap_settings

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from lark.config import LarkConfig
    from lark.shaping import TbfParameters

Status = Literal["ok", "fail", "warn"]

#: the schedd transforms the submit drop-in adds; LarkNetwork and LarkHold are needed for any job to
#: run and be held correctly, LarkSite and LarkLink for network-aware matchmaking
SUBMIT_TRANSFORMS = ("LarkNetwork", "LarkHold", "LarkSite", "LarkLink")
#: what the starter must let through from the broker's delayed chirp updates
CHIRP_PREFIXES = ("Lark*", "NetworkInputMb", "NetworkOutputMb")
#: the module that gives a feature, where its name differs
KERNEL_MODULES: Mapping[str, str] = {"tbf": "sch_tbf"}
RESTART_STARTD = "condor_restart -daemon startd (NO_JOB_NETWORKING is read when the startd starts)"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Answer:
    """One question to HTCondor or the broker: its value, or why there is none."""

    value: str | None = None
    error: str | None = None


@dataclass
class NodeFacts:
    """What :func:`gather` found; every field is a plain value, so tests can write them down."""

    daemon_list: str
    cli_version: str = __version__
    socket_path: str = "/run/lark/netd.sock"
    #: the broker's reply to ``ping`` (None: no reply; then ``broker_error`` says why)
    broker_reply: dict[str, object] | None = None
    broker_error: str | None = None
    #: knob -> the running startd's / schedd's value (condor_config_val -startd / -schedd)
    startd: dict[str, Answer] = field(default_factory=dict)
    schedd: dict[str, Answer] = field(default_factory=dict)
    #: this machine's slot ads from the collector (None: the query failed, see ``slots_error``)
    slots: list[dict[str, object]] | None = None
    slots_error: str | None = None
    firewall: str = "nftables"
    firewall_error: str | None = None  # None: the backend's library loads
    network_types: tuple[str, ...] = ("nat", "none")
    #: feature (veth, bridge, macvlan, ipvlan, tbf) -> None when the kernel did it, else the error
    kernel: dict[str, str | None] = field(default_factory=dict)
    #: a site mode's parent interface (LARK_BRIDGE, LARK_MACVLAN_PARENT, ...) -> exists on the host
    parents: dict[str, bool] = field(default_factory=dict)
    #: the roles to check ("execute", "submit"); empty: every role DAEMON_LIST gives the node
    only_roles: tuple[str, ...] = ()
    #: the socket lark-wrap will ask (its lark-wrap.conf beside it), None when the wrapper is not known
    wrapper_socket: str | None = None
    #: site modes whose addressing asks for DHCP -> None when the DHCP client is there, else why not
    dhcp_client: dict[str, str | None] = field(default_factory=dict)

    @property
    def execute_node(self) -> bool:
        if self.only_roles:
            return "execute" in self.only_roles
        names = self.daemon_list.replace(",", " ").upper().split()
        return "STARTD" in names or "LARK_NETD" in names

    @property
    def submit_node(self) -> bool:
        if self.only_roles:
            return "submit" in self.only_roles
        return "SCHEDD" in self.daemon_list.replace(",", " ").upper().split()


# ------------------------------------------------------------------ verdicts (pure)


def is_true(text: str | None) -> bool:
    return (text or "").strip().lower() in ("true", "1", "yes", "t")


def check_broker(facts: NodeFacts) -> Check:
    if facts.broker_reply is not None and facts.broker_reply.get("ok") is True:
        return Check("broker", "ok", f"lark-netd answers on {facts.socket_path}")
    why = facts.broker_error or f"it answered {facts.broker_reply!r}"
    return Check("broker", "fail", f"lark-netd does not answer on {facts.socket_path}: {why}",
                 "check that DAEMON_LIST has LARK_NETD and that the master runs it (condor_reconfig); "
                 "its reasons are in $(LOG)/LarkNetdLog")


def check_versions(facts: NodeFacts) -> Check:
    broker = (facts.broker_reply or {}).get("version")
    if facts.broker_reply is None:
        return Check("versions", "warn", f"lark {facts.cli_version}; the broker's version is unknown (no reply)")
    if broker is None:
        return Check("versions", "warn", f"lark {facts.cli_version}; lark-netd does not report its version",
                     "condor_restart -daemon LARK_NETD, so the broker runs the installed release")
    if str(broker) != facts.cli_version:
        return Check("versions", "fail", f"lark {facts.cli_version} but lark-netd {broker}",
                     "condor_restart -daemon LARK_NETD (the broker still runs the release it started with)")
    return Check("versions", "ok", f"lark and lark-netd are both {broker}")


def check_no_job_networking(facts: NodeFacts) -> Check:
    answer = facts.startd.get("NO_JOB_NETWORKING", Answer(error="not asked"))
    if answer.value is None:
        return Check("no-job-networking", "fail", f"the running startd did not answer: {answer.error}",
                     "start the startd (condor_on -daemon startd), or wait for it: lark doctor --wait 60")
    if not is_true(answer.value):
        return Check("no-job-networking", "fail", f"NO_JOB_NETWORKING is {answer.value} in the running startd",
                     f"install 50-lark-execute.conf in /etc/condor/config.d, then {RESTART_STARTD}")
    return Check("no-job-networking", "ok", "NO_JOB_NETWORKING = True in the running startd")


def check_wrapper(facts: NodeFacts) -> Check:
    answer = facts.startd.get("USER_JOB_WRAPPER", Answer(error="not asked"))
    if answer.value and os.path.basename(answer.value.strip()) == "lark-wrap":
        return Check("job-wrapper", "ok", f"USER_JOB_WRAPPER = {answer.value.strip()}")
    shown = answer.value if answer.value is not None else answer.error
    return Check("job-wrapper", "fail", f"USER_JOB_WRAPPER is not lark-wrap in the running startd ({shown})",
                 "install 50-lark-execute.conf (LARK_BIN = Lark's bin/), then condor_reconfig")


def check_wrapper_socket(facts: NodeFacts) -> list[Check]:
    """lark-wrap reads the broker's socket from ``lark-wrap.conf`` beside it, not from HTCondor's
    configuration (a job's environment is the user's): a moved LARK_SOCKET must be written there too."""
    if facts.wrapper_socket is None:
        return []
    if facts.wrapper_socket == facts.socket_path:
        return [Check("wrapper-socket", "ok", f"lark-wrap asks {facts.wrapper_socket}, where lark-netd listens")]
    return [Check("wrapper-socket", "fail", f"lark-wrap will ask {facts.wrapper_socket}, but LARK_SOCKET is "
                  f"{facts.socket_path}: every job would be held (exit 117)",
                  f"write 'socket = {facts.socket_path}' into lark-wrap.conf beside lark-wrap")]


def check_dhcp_client(facts: NodeFacts) -> list[Check]:
    checks = []
    for mode, error in sorted(facts.dhcp_client.items()):
        if error is None:
            checks.append(Check(f"dhcp-{mode}", "ok", f"{mode} jobs get DHCP leases from udhcpc"))
        else:
            checks.append(Check(f"dhcp-{mode}", "fail", f"{mode} addressing asks for DHCP: {error}",
                                "apt-get install udhcpc (or busybox); or set the addressing to static or slaac"))
    return checks


def check_slots(facts: NodeFacts) -> Check:
    if facts.slots is None:
        return Check("slots", "fail", f"cannot read this machine's slot ads: {facts.slots_error}",
                     "wait for the startd to advertise (lark doctor --wait 60)")
    if not facts.slots:
        return Check("slots", "fail", "the collector has no slot of this machine",
                     "wait for the startd to advertise (lark doctor --wait 60)")
    missing = [str(s.get("Name", "?")) for s in facts.slots if s.get("HasLark") is not True]
    if missing:
        return Check("slots", "fail", f"slots without HasLark = true: {', '.join(missing)}",
                     f"check STARTD_ATTRS has HasLark (50-lark-execute.conf), then {RESTART_STARTD}")
    return Check("slots", "ok", f"{len(facts.slots)} slot(s) advertise HasLark")


def check_chirp_prefix(facts: NodeFacts) -> Check:
    answer = facts.startd.get("CHIRP_DELAYED_UPDATE_PREFIX", Answer(error="not asked"))
    listed = {p.strip() for p in (answer.value or "").replace(",", " ").split()}
    missing = [p for p in CHIRP_PREFIXES if p not in listed and "*" not in listed]
    if answer.value is None or missing:
        return Check("chirp-prefix", "fail",
                     f"CHIRP_DELAYED_UPDATE_PREFIX lacks {', '.join(missing) or 'everything'}: the broker's "
                     "counter updates would be dropped",
                     f"CHIRP_DELAYED_UPDATE_PREFIX = Chirp*, {', '.join(CHIRP_PREFIXES)} (50-lark-execute.conf)")
    return Check("chirp-prefix", "ok", f"CHIRP_DELAYED_UPDATE_PREFIX = {answer.value.strip()}")


def check_transforms(facts: NodeFacts) -> Check:
    answer = facts.schedd.get("JOB_TRANSFORM_NAMES", Answer(error="not asked"))
    if answer.value is None:
        return Check("transforms", "fail", f"the running schedd did not answer: {answer.error}",
                     "start the schedd, or install 60-lark-submit.conf and condor_reconfig")
    names = answer.value.replace(",", " ").split()
    missing = [t for t in SUBMIT_TRANSFORMS if t not in names]
    if missing:
        return Check("transforms", "fail", f"the schedd lacks the job transforms {', '.join(missing)}",
                     "cp 60-lark-submit.conf /etc/condor/config.d/ && condor_reconfig")
    body = facts.schedd.get("JOB_TRANSFORM_LarkNetwork", Answer()).value or ""
    if "WantIOProxy" not in body:
        return Check("transforms", "fail", "the LarkNetwork transform does not set WantIOProxy (the broker's "
                     "chirp needs the I/O proxy)", "install the 60-lark-submit.conf of this release, condor_reconfig")
    return Check("transforms", "ok", f"schedd transforms {', '.join(SUBMIT_TRANSFORMS)} active (WantIOProxy set)")


def check_firewall(facts: NodeFacts) -> Check:
    if facts.firewall_error is None:
        return Check("firewall", "ok", f"LARK_FIREWALL = {facts.firewall} is usable")
    fix = ("install libnftables1 (Debian/Ubuntu) or nftables (EL)" if facts.firewall == "nftables"
           else f"{extra_hint('iptables')} (needs gcc), or use nftables")
    return Check("firewall", "fail", f"LARK_FIREWALL = {facts.firewall}: {facts.firewall_error}", fix)


def check_kernel(facts: NodeFacts) -> list[Check]:
    checks = []
    for feature in needed_features(facts.network_types):
        error = facts.kernel.get(feature, "not probed")
        users = ", ".join(m for m in facts.network_types if feature in mode_features(m))
        if error is None:
            checks.append(Check(f"kernel-{feature}", "ok", f"the kernel does {feature} (for {users})"))
        else:
            module = KERNEL_MODULES.get(feature, feature)
            checks.append(Check(f"kernel-{feature}", "fail", f"the kernel cannot do {feature}, which {users} "
                                f"needs: {error}", f"load the module (modprobe {module}) or remove {users} "
                                "from LARK_NETWORK_TYPES"))
    for knob, present in sorted(facts.parents.items()):
        if present:
            checks.append(Check(f"parent-{knob}", "ok", f"{knob}'s interface exists"))
        else:
            checks.append(Check(f"parent-{knob}", "fail", f"{knob} names an interface this host does not have",
                                f"create it, or correct {knob}"))
    return checks


def mode_features(name: str) -> tuple[str, ...]:
    """The kernel features mode ``name`` needs (none for a name this Lark does not know: the
    configuration check reports that)."""
    try:
        return attach.mode(name).kernel_features
    except attach.UnknownMode:
        return ()


def needed_features(network_types: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for mode in network_types:
        for feature in mode_features(mode):
            seen[feature] = None
    return list(seen)


def run_checks(facts: NodeFacts) -> list[Check]:
    checks: list[Check] = []
    if facts.execute_node:
        checks += [check_broker(facts), check_versions(facts), check_no_job_networking(facts), check_wrapper(facts),
                   *check_wrapper_socket(facts), check_slots(facts), check_chirp_prefix(facts), check_firewall(facts),
                   *check_kernel(facts), *check_dhcp_client(facts)]
    if facts.submit_node:
        checks.append(check_transforms(facts))
    if not checks:
        checks.append(Check("role", "fail", f"DAEMON_LIST ({facts.daemon_list or 'empty'}) has neither a startd "
                            "nor a schedd: this is neither an execute nor a submit node",
                            "run lark doctor on an execute or submit node"))
    return checks


def exit_status(checks: Sequence[Check]) -> int:
    """0 when every check holds (warnings allowed), 1 when any failed."""
    return 1 if any(c.status == "fail" for c in checks) else 0


def format_checks(checks: Sequence[Check]) -> str:
    lines = []
    for c in checks:
        line = f"{c.status.upper():<5}{c.name}: {c.detail}"
        lines.append(f"{line} -> fix: {c.fix}" if c.status != "ok" and c.fix else line)
    return "\n".join(lines)


def checks_json(checks: Sequence[Check]) -> str:
    return json.dumps([asdict(c) for c in checks], indent=1)


# ------------------------------------------------------------------ gathering (the edge)

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return subprocess.CompletedProcess(list(argv), 127, "", str(err))


def ask_daemon(daemon: str, knob: str, run: Runner = _run) -> Answer:
    """A knob's value in the running daemon (``condor_config_val -startd KNOB``)."""
    proc = run(["condor_config_val", f"-{daemon}", knob])
    if proc.returncode == 0:
        return Answer(value=proc.stdout.strip())
    return Answer(error=" ".join((proc.stderr or proc.stdout).split())[:300] or f"exit {proc.returncode}")


def ping_broker(path: str, timeout: float = 5.0) -> tuple[dict[str, object] | None, str | None]:
    """The broker's answer to ``ping`` (root may ask it), or None and why."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(b'{"op": "ping"}\n')
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        reply = json.loads(data) if data else None
        if not isinstance(reply, dict):
            return None, f"unexpected reply {data[:200]!r}"
        return reply, None
    except (OSError, ValueError) as err:
        return None, str(err)
    finally:
        sock.close()


def slot_ads(hostname: str, run: Runner = _run) -> tuple[list[dict[str, object]] | None, str | None]:
    proc = run(["condor_status", "-json", "-constraint", f'Machine == "{hostname}"',
                "-attributes", "Name,HasLark,LarkNetworkTypes"])
    if proc.returncode != 0:
        return None, " ".join(proc.stderr.split())[:300] or f"condor_status exited {proc.returncode}"
    try:
        return (json.loads(proc.stdout) if proc.stdout.strip() else []), None
    except ValueError as err:
        return None, f"condor_status printed no JSON: {err}"


def firewall_error(backend: str) -> str | None:
    if backend == "iptables":
        try:
            import iptc  # noqa: F401
        except Exception as err:  # python-iptables raises XTablesError, ImportError, OSError
            return f"python-iptables does not load: {err}"
        return None
    import ctypes

    from lark.firewall.libnft import LIBRARY

    try:
        ctypes.CDLL(LIBRARY)
    except OSError as err:
        return f"{LIBRARY} does not load: {err}"
    return None


def probe_kernel(features: Sequence[str]) -> dict[str, str | None]:
    """Create each feature's object in a throwaway namespace (veth pair, bridge, macvlan and ipvlan
    on the veth, a tbf qdisc), then delete the namespace and with it everything in it. The name is
    outside every Lark prefix, so a concurrent broker sweep never takes it for a leftover."""
    if not features:
        return {}
    from lark import netns
    from lark.shaping import tbf_parameters

    name = f"doctor-lark-{os.getpid()}"
    path = netns.create_named(name)
    results: dict[str, str | None] = {}
    try:
        ipr = netns.iproute_in(path)
        try:
            steps: dict[str, Callable[[], object]] = {
                "veth": lambda: ipr.link("add", ifname="dr0", kind="veth", peer="dr1"),
                "bridge": lambda: ipr.link("add", ifname="drbr", kind="bridge"),
                "macvlan": lambda: ipr.link("add", ifname="drmv", kind="macvlan", link=_index(ipr, "dr0"),
                                            macvlan_mode="bridge"),
                "ipvlan": lambda: ipr.link("add", ifname="driv", kind="ipvlan", link=_index(ipr, "dr1")),
                "tbf": lambda: _add_tbf(ipr, tbf_parameters(100)),
            }
            for feature in ("veth", *[f for f in features if f != "veth"]):
                try:
                    steps[feature]()
                    results[feature] = None
                except Exception as err:  # NetlinkError, or veth missing for the others
                    results[feature] = str(err) or type(err).__name__
        finally:
            ipr.close()
    finally:
        netns.delete_named(name)
    return {f: results.get(f, "not probed") for f in features}


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LookupError(f"{name} does not exist (veth failed)")
    return int(found[0])


def _add_tbf(ipr: IPRoute, params: TbfParameters) -> None:
    ipr.tc("add", "tbf", _index(ipr, "dr0"), 0x10000, rate=params.rate,
           burst=params.burst, limit=params.limit)


def dhcp_client_error() -> str | None:
    from lark.addressing.dhcp import client_command

    try:
        client_command()
    except LarkError as err:
        return str(err)
    return None


def host_links() -> set[str]:
    return set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()


def gather(config: LarkConfig, param: Callable[[str], str | None], run: Runner = _run,
           roles: Sequence[str] = ()) -> NodeFacts:
    """Ask everything :func:`run_checks` judges for ``roles`` (empty: the node's own, from DAEMON_LIST).
    ``config`` is the node's LarkConfig."""
    facts = NodeFacts(daemon_list=param("DAEMON_LIST") or "", only_roles=tuple(roles))
    facts.socket_path = str(config.socket_path)
    facts.firewall = config.firewall
    facts.network_types = tuple(config.network_types)
    if facts.execute_node:
        facts.broker_reply, facts.broker_error = ping_broker(facts.socket_path)
        for knob in ("NO_JOB_NETWORKING", "USER_JOB_WRAPPER", "CHIRP_DELAYED_UPDATE_PREFIX"):
            facts.startd[knob] = ask_daemon("startd", knob, run)
        wrapper = facts.startd["USER_JOB_WRAPPER"].value
        if wrapper and os.path.basename(wrapper.strip()) == "lark-wrap":
            facts.wrapper_socket = wrap_settings(os.path.dirname(wrapper.strip()))[0]
        facts.slots, facts.slots_error = slot_ads(param("FULL_HOSTNAME") or socket.getfqdn(), run)
        facts.firewall_error = firewall_error(facts.firewall)
        try:
            facts.kernel = probe_kernel(needed_features(facts.network_types))
        except Exception as err:  # no namespace at all: every feature fails with that reason
            facts.kernel = {f: f"cannot make a test namespace: {err}" for f in needed_features(facts.network_types)}
        links = host_links()
        for name, site in config.site_attachments.items():
            pools = attach.mode(name).site
            if name in facts.network_types and site.parent and pools is not None:
                facts.parents[pools.parent.name] = site.parent in links
            if name in facts.network_types and "dhcp" in site.addressing:
                facts.dhcp_client[name] = dhcp_client_error()
    if facts.submit_node:
        for knob in ("JOB_TRANSFORM_NAMES", "JOB_TRANSFORM_LarkNetwork"):
            facts.schedd[knob] = ask_daemon("schedd", knob, run)
    return facts

