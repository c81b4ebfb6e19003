"""The HTCondor job a transfer becomes, and the transfer state read back from the job's ad. Pure.

A transfer is one job: the mover (``globus-url-copy``, ``curl``, ``xrdcp``/``xrdfs``) is its
executable, so queueing, fair share, holds, retries and history are the pool's. The job carries:

- ``LarkNetworkProfile`` (the endpoint's or the request's profile) and a requirement on
  ``LarkProfiles``, so it runs where the profile is offered. The profile's ``port_range_env``
  exports ``GLOBUS_TCP_PORT_RANGE`` from the job's inbound port range: a GridFTP ``get`` in
  extended block mode has the server connect back to the client, on those (forwarded) ports.
- ``LarkSourceSite`` (where the data comes from: the endpoint's site for get and delete) and
  ``LarkInputBytes`` (the request's size), which network-aware matchmaking reads.
- ``LarkTransfer*`` attributes holding the request itself, so the queue and the history are the
  service's only records: nothing to keep in sync, and ``condor_q -af LarkTransferSource`` reads
  naturally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from lark.transfer.model import TransferRequest

State = Literal["QUEUED", "ACTIVE", "INACTIVE", "SUCCEEDED", "FAILED", "CANCELED"]
STATES: tuple[str, ...] = ("QUEUED", "ACTIVE", "INACTIVE", "SUCCEEDED", "FAILED", "CANCELED")
TERMINAL: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})

ATTR_VERB = "LarkTransferVerb"
ATTR_SOURCE = "LarkTransferSource"
ATTR_DESTINATION = "LarkTransferDestination"
ATTR_ENDPOINT = "LarkTransferEndpoint"
ATTR_PROTOCOL = "LarkTransferProtocol"
ATTR_LABEL = "LarkTransferLabel"
ATTR_SUBMISSION = "LarkTransferSubmissionId"
ATTR_LOGS = "LarkTransferLogs"  # the directory and stem of the job's event log, stdout and stderr

# What a transfer's status is read from: the projection of every query
PROJECTION: tuple[str, ...] = (
    "ClusterId", "ProcId", "Owner", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason",
    "RemoveReason", "QDate", "JobStartDate", "JobCurrentStartDate", "CompletionDate", "EnteredCurrentStatus",
    "LarkBytesIn", "LarkBytesOut", "LarkNetworkProfile", "LarkSourceSite", "LarkInputBytes", "LastRemoteHost",
    ATTR_VERB, ATTR_SOURCE, ATTR_DESTINATION, ATTR_ENDPOINT, ATTR_PROTOCOL, ATTR_LABEL, ATTR_SUBMISSION, ATTR_LOGS,
)


@dataclass(frozen=True)
class Movers:
    """Paths of the movers on the execute nodes (or inside the container image)."""

    globus_url_copy: str = "/usr/bin/globus-url-copy"
    curl: str = "/usr/bin/curl"
    xrdcp: str = "/usr/bin/xrdcp"
    xrdfs: str = "/usr/bin/xrdfs"
    gridftp_streams: int = 4  # parallel streams: more than one puts globus-url-copy in extended block mode


def mover_command(request: TransferRequest, movers: Movers = Movers()) -> list[str]:
    """The mover's argv for ``request``: the job's executable and arguments."""
    url, local, verb = request.remote.url, request.local or "", request.verb
    protocol = request.remote.endpoint.protocol
    if protocol == "gridftp":
        # -vb prints bytes and rate; -p N: parallel streams, extended block mode (the sender connects,
        # so for a get the server calls back on GLOBUS_TCP_PORT_RANGE)
        streams = ["-p", str(movers.gridftp_streams)] if movers.gridftp_streams > 1 else []
        pair = [url, f"file://{local}"] if verb == "get" else [f"file://{local}", url]
        return [movers.globus_url_copy, "-vb", *streams, *pair]
    if protocol == "https":
        common = [movers.curl, "--fail", "--silent", "--show-error", "--location"]
        if verb == "get":
            return [*common, "--output", local, url]
        if verb == "put":
            return [*common, "--upload-file", local, url]
        return [*common, "--request", "DELETE", url]
    if verb == "delete":
        host, _, path = url.partition("//")[2].partition("/")
        return [movers.xrdfs, f"{url.split('//')[0]}//{host}", "rm", "/" + path.lstrip("/")]
    pair = [url, local] if verb == "get" else [local, url]
    return [movers.xrdcp, "--nopbar", "--force", *pair]


def classad_string(value: str) -> str:
    """A ClassAd string literal (for ``+Attr = ...`` lines of a submit description)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def submit_arguments(argv: list[str]) -> str:
    """HTCondor's new-syntax ``arguments``: double-quoted, single quotes group, ``''`` and ``""`` escape."""
    def one(arg: str) -> str:
        return "'" + arg.replace("'", "''").replace('"', '""') + "'"
    return '"' + " ".join(one(a) for a in argv) + '"'


def submit_description(request: TransferRequest, logs: str, movers: Movers = Movers()) -> dict[str, str]:
    """The submit description (key -> value, as ``condor_submit`` reads it) of ``request``.

    ``logs`` is the path stem of the job's event log, stdout and stderr (``<logs>.log``, ``.out``,
    ``.err``), in a directory the user can write.
    """
    argv = mover_command(request, movers)
    endpoint = request.remote.endpoint
    desc: dict[str, str] = {
        "universe": "container" if endpoint.container_image else "vanilla",
        "executable": argv[0],
        "transfer_executable": "false",
        "arguments": submit_arguments(argv[1:]),
        "should_transfer_files": "NO",  # the mover reads and writes the shared file system itself
        # the job's working directory: its logs' directory, the user's own. Without it the job's Iwd is
        # the service's working directory ("/"), which the container universe binds over the image's root
        "initialdir": logs.rpartition("/")[0] or "/",
        "log": f"{logs}.log",
        "output": f"{logs}.out",
        "error": f"{logs}.err",
        "+" + ATTR_VERB: classad_string(request.verb),
        "+" + ATTR_SOURCE: classad_string(request.source),
        "+" + ATTR_DESTINATION: classad_string(request.destination),
        "+" + ATTR_ENDPOINT: classad_string(endpoint.name),
        "+" + ATTR_PROTOCOL: classad_string(endpoint.protocol),
        "+" + ATTR_LABEL: classad_string(request.label),
        "+" + ATTR_LOGS: classad_string(logs),
    }
    if endpoint.container_image:
        desc["container_image"] = endpoint.container_image
        desc["transfer_container"] = "false"
    if request.submission_id:
        desc["+" + ATTR_SUBMISSION] = classad_string(request.submission_id)
    if request.verb in ("get", "delete"):
        desc["+LarkSourceSite"] = classad_string(endpoint.site)
    if request.size is not None:
        desc["+LarkInputBytes"] = str(request.size if request.verb == "get" else 0)
    if request.profile:
        desc["+LarkNetworkProfile"] = classad_string(request.profile)
        desc["requirements"] = f"stringListMember({classad_string(request.profile)}, TARGET.LarkProfiles ?: \"\")"
    return desc


def submit_text(desc: Mapping[str, str]) -> str:
    """The submit file ``condor_submit`` reads for ``desc``, one job."""
    return "".join(f"{k} = {v}\n" for k, v in desc.items()) + "queue 1\n"


def queued_ad(request: TransferRequest, cluster: int, owner: str, now: float) -> dict[str, object]:
    """The ad of the job ``request`` just became (cluster ``cluster``), as far as the service knows it
    without asking the schedd again: idle, submitted now, with the request's attributes."""
    ad: dict[str, object] = {
        "ClusterId": cluster, "ProcId": 0, "Owner": owner, "JobStatus": 1, "QDate": int(now),
        ATTR_VERB: request.verb, ATTR_SOURCE: request.source, ATTR_DESTINATION: request.destination,
        ATTR_ENDPOINT: request.remote.endpoint.name, ATTR_PROTOCOL: request.remote.endpoint.protocol,
        ATTR_LABEL: request.label,
    }
    if request.submission_id:
        ad[ATTR_SUBMISSION] = request.submission_id
    if request.profile:
        ad["LarkNetworkProfile"] = request.profile
    if request.verb in ("get", "delete"):
        ad["LarkSourceSite"] = request.remote.endpoint.site
    if request.size is not None:
        ad["LarkInputBytes"] = request.size if request.verb == "get" else 0
    return ad


# ------------------------------------------------------------------------------------------------
# Job -> transfer


def _number(ad: Mapping[str, object], attr: str) -> int | None:
    value = ad.get(attr)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _string(ad: Mapping[str, object], attr: str) -> str | None:
    value = ad.get(attr)
    return value if isinstance(value, str) else None


def transfer_state(ad: Mapping[str, object]) -> tuple[State, str | None]:
    """The transfer state of a job ad and, for INACTIVE and FAILED, why.

    HTCondor's JobStatus: 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring output,
    7 suspended. A held job waits for someone to fix it (Globus calls that INACTIVE); a completed job
    succeeded only when the mover exited 0 (not by a signal).
    """
    status = _number(ad, "JobStatus")
    if status == 1:
        return "QUEUED", None
    if status in (2, 6):
        return "ACTIVE", None
    if status == 5:
        return "INACTIVE", _string(ad, "HoldReason") or "held"
    if status == 7:
        return "INACTIVE", "suspended"
    if status == 3:
        return "CANCELED", _string(ad, "RemoveReason")
    if status == 4:
        if ad.get("ExitBySignal") is True:
            return "FAILED", f"the mover was killed by signal {_number(ad, 'ExitSignal')}"
        code = _number(ad, "ExitCode")
        if code == 0:
            return "SUCCEEDED", None
        return "FAILED", f"the mover exited with status {code}"
    return "QUEUED", None  # 0 (unexpanded) or a status newer than this code: not started as far as we know


def transfer_id(ad: Mapping[str, object]) -> str:
    return f"{_number(ad, 'ClusterId')}.{_number(ad, 'ProcId') or 0}"


def transfer_view(ad: Mapping[str, object], now: float) -> dict[str, object]:
    """The JSON a client sees for one transfer job.

    ``bytes`` is what crossed the job's interface in the direction the data went (``LarkBytesIn`` for
    a get, ``LarkBytesOut`` for a put; headers and acknowledgements included); ``rate_mbit`` divides
    it by the time the job has run, up to now for a running job.
    """
    state, reason = transfer_state(ad)
    verb = _string(ad, ATTR_VERB) or ""
    bytes_in, bytes_out = _number(ad, "LarkBytesIn"), _number(ad, "LarkBytesOut")
    moved = bytes_out if verb == "put" else bytes_in
    start = _number(ad, "JobCurrentStartDate") or _number(ad, "JobStartDate")
    end = _number(ad, "CompletionDate") or None
    if state in TERMINAL and end is None:
        end = _number(ad, "EnteredCurrentStatus")
    rate = None
    if moved is not None and start:
        seconds = (end or now) - start
        rate = round(moved * 8 / seconds / 1e6, 3) if seconds > 0 else None
    host = _string(ad, "LastRemoteHost")
    return {
        "id": transfer_id(ad), "state": state, "reason": reason, "owner": _string(ad, "Owner"),
        "verb": verb, "source": _string(ad, ATTR_SOURCE), "destination": _string(ad, ATTR_DESTINATION),
        "endpoint": _string(ad, ATTR_ENDPOINT), "protocol": _string(ad, ATTR_PROTOCOL),
        "label": _string(ad, ATTR_LABEL) or "", "submission_id": _string(ad, ATTR_SUBMISSION),
        "profile": _string(ad, "LarkNetworkProfile"), "site": _string(ad, "LarkSourceSite"),
        "size": _number(ad, "LarkInputBytes"), "bytes": moved, "bytes_in": bytes_in, "bytes_out": bytes_out,
        "rate_mbit": rate, "submitted": _number(ad, "QDate"), "started": start, "ended": end,
        "host": host.partition("@")[2] or host if host else None,
    }
