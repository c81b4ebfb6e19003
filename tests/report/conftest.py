"""Helpers that produce report inputs the way HTCondor does: ads built and serialised by classad2."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import classad2
import pytest


def make_ad(attrs: Mapping[str, Any], exprs: Mapping[str, str] | None = None) -> classad2.ClassAd:
    ad = classad2.ClassAd()
    for k, v in attrs.items():
        ad[k] = v
    for k, text in (exprs or {}).items():
        ad[k] = classad2.ExprTree(text)
    return ad


def banner(ad: classad2.ClassAd, offset: int = 0) -> str:
    """The line the schedd writes after each ad in its history file."""
    return (f'*** Offset = {offset} ClusterId = {ad.get("ClusterId")} ProcId = {ad.get("ProcId")} '
            f'Owner = "{ad.get("Owner")}" CompletionDate = {ad.get("CompletionDate", 0)}\n')


def history_text(ads: Iterable[classad2.ClassAd]) -> str:
    out, offset = [], 0
    for ad in ads:
        text = ad.printOld() + banner(ad, offset)
        offset += len(text)
        out.append(text)
    return "".join(out)


def json_text(ads: Iterable[classad2.ClassAd]) -> str:
    """condor_history -json layout: a JSON array, one pretty-printed ad per element."""
    return "[\n" + "\n,\n".join(ad.printJson().rstrip("\n") for ad in ads) + "\n]\n"


def write_history(path: Path, ads: Iterable[classad2.ClassAd]) -> Path:
    path.write_text(history_text(ads), encoding="utf-8")
    return path


def write_json(path: Path, ads: Iterable[classad2.ClassAd]) -> Path:
    path.write_text(json_text(ads), encoding="utf-8")
    return path


T0 = 1790000000  # 2026-09-21 14:13:20 UTC


def lark_job(cluster: int, owner: str = "alice", bytes_in: int = 0, bytes_out: int = 0, **extra: Any
             ) -> classad2.ClassAd:
    attrs: dict[str, Any] = {"ClusterId": cluster, "ProcId": 0, "Owner": owner, "User": f"{owner}@lark.test",
                             "LarkBytesIn": bytes_in, "LarkBytesOut": bytes_out, "LarkNetworkType": "nat",
                             "JobCurrentStartDate": T0, "CompletionDate": T0 + 100,
                             "GlobalJobId": f"submit.lark.test#{cluster}.0#{T0 - 10}"}
    attrs.update(extra)
    return make_ad(attrs)


def gridftp_line(start: str, end: str, nbytes: int, user: str = "alice", host: str = "dtn1.example.org",
                 dest: str = "[192.0.2.5]", kind: str = "RETR", file: str = "/data/f", code: str = "226",
                 extra: str = " TASKID=none") -> str:
    return (f"DATE={end} HOST={host} PROG=globus-gridftp-server NL.EVNT=FTP_INFO START={start} USER={user} "
            f"FILE={file} BUFFER=0 BLOCK=262144 NBYTES={nbytes} VOLUME=/ STREAMS=4 STRIPES=1 DEST={dest} "
            f"TYPE={kind} CODE={code}{extra}")


@pytest.fixture
def sample_ads() -> list[classad2.ClassAd]:
    return [
        lark_job(1, "alice", 6_000_000_000, 2_000_000_000, AcctGroup="cms", MachineAttrGLIDEIN_Site0="UNL",
                 LarkSourceSite="FNAL", LarkBytesInWan=4_000_000_000, LarkBytesOutWan=1_000_000_000,
                 BytesSent=1000.0, BytesRecvd=5000.0, TransferInputSizeMB=5),
        lark_job(2, "bob", 1_000_000_000, 0, AcctGroup="atlas", LastRemoteHost="slot1_2@node7.mit.edu",
                 LarkSourceSite="BNL"),
        make_ad({"ClusterId": 3, "ProcId": 1, "Owner": "carol", "JobCurrentStartDate": T0, "CompletionDate": T0 + 50,
                 "NetworkInputMb": 2.5, "NetworkOutputMb": 0.5, "RemoteHost": "slot1@vm"}),
        make_ad({"ClusterId": 4, "ProcId": 0, "User": "dave@lark.test", "AccountingGroup": "group_cms.dave",
                 "CompletionDate": 0}),
    ]
