"""The job a transfer becomes, and the transfer state read back from real classad2 job ads."""

from __future__ import annotations

import classad2
import pytest

from lark.transfer.endpoints import parse_endpoints
from lark.transfer.jobs import (
    Movers,
    mover_command,
    queued_ad,
    submit_arguments,
    submit_description,
    submit_text,
    transfer_state,
    transfer_view,
)
from lark.transfer.model import validate

ENDPOINTS = {e.name: e for e in parse_endpoints("""\
endpoints:
  ftp:
    protocol: gridftp
    url: ftp://127.0.0.1:2811/data/
    site: FNAL
    profile: nat-callback
  web:
    protocol: https
    url: http://127.0.0.1:8080/
    site: UCSD
  xrd:
    protocol: xrootd
    url: root://127.0.0.1:1094//store/
    site: CERN
    container_image: /images/xfer.sif
""", "ep.yaml")[0]}


def request(**body: object):  # noqa: ANN201 - a TransferRequest
    return validate(body, ENDPOINTS, "bob")


def test_movers_for_each_protocol_and_verb() -> None:
    get = request(verb="get", source="ftp:a.dat", destination="/d/a.dat")
    assert mover_command(get) == ["/usr/bin/globus-url-copy", "-vb", "-p", "4", "ftp://127.0.0.1:2811/data/a.dat",
                                  "file:///d/a.dat"]
    put = request(verb="put", source="/d/a.dat", destination="ftp:b.dat")
    assert mover_command(put, Movers(gridftp_streams=1))[-3:] == ["-vb", "file:///d/a.dat",
                                                                  "ftp://127.0.0.1:2811/data/b.dat"]
    assert mover_command(request(verb="put", source="/d/a", destination="web:x/a"))[-3:] == [
        "--upload-file", "/d/a", "http://127.0.0.1:8080/x/a"]
    assert mover_command(request(verb="get", source="web:x/a", destination="/d/a"))[-3:] == [
        "--output", "/d/a", "http://127.0.0.1:8080/x/a"]
    assert mover_command(request(verb="delete", source="web:x/a"))[-3:] == ["--request", "DELETE", "http://127.0.0.1:8080/x/a"]
    assert mover_command(request(verb="delete", source="xrd:f")) == [
        "/usr/bin/xrdfs", "root://127.0.0.1:1094", "rm", "/store/f"]
    assert mover_command(request(verb="get", source="xrd:f", destination="/d/f"))[-2:] == [
        "root://127.0.0.1:1094//store/f", "/d/f"]


def test_submit_description_carries_profile_site_size_and_the_request() -> None:
    req = request(verb="get", source="ftp:a.dat", destination="/d/a.dat", size=5_000_000, label='say "hi"',
                  submission_id="abc-1")
    desc = submit_description(req, "/var/lib/lark/transfers/bob/abc-1")
    assert desc["universe"] == "vanilla" and desc["executable"] == "/usr/bin/globus-url-copy"
    assert desc["+LarkNetworkProfile"] == '"nat-callback"'
    assert desc["requirements"] == 'stringListMember("nat-callback", TARGET.LarkProfiles ?: "")'
    assert desc["+LarkSourceSite"] == '"FNAL"' and desc["+LarkInputBytes"] == "5000000"
    assert desc["log"] == "/var/lib/lark/transfers/bob/abc-1.log"
    # the mover works in the user's log directory, not in the service's working directory
    assert desc["initialdir"] == "/var/lib/lark/transfers/bob"
    # the ClassAd literals parse back to the values (quotes escaped)
    for key, value in (("+LarkTransferLabel", 'say "hi"'), ("+LarkTransferSubmissionId", "abc-1"),
                       ("+LarkTransferSource", "ftp:a.dat"), ("+LarkTransferDestination", "/d/a.dat")):
        assert classad2.ExprTree(desc[key]).eval() == value
    text = submit_text(desc)
    assert text.endswith("queue 1\n") and "\n+LarkTransferVerb = \"get\"\n" in text


def test_put_has_no_source_site_and_container_endpoints_use_the_container_universe() -> None:
    desc = submit_description(request(verb="put", source="/d/f", destination="xrd:f", size=10), "/l/x")
    assert "+LarkSourceSite" not in desc and desc["+LarkInputBytes"] == "0"
    assert (desc["universe"], desc["container_image"]) == ("container", "/images/xfer.sif")
    assert "+LarkNetworkProfile" not in desc and "requirements" not in desc


def test_arguments_use_the_new_syntax_quoting() -> None:
    # HTCondor's new syntax: the whole in double quotes, each argument in single quotes, a quote doubled
    assert submit_arguments(["-o", "/d/it's a \"file\""]) == '"\'-o\' \'/d/it\'\'s a ""file""\'"'


def ad(text: str) -> classad2.ClassAd:
    return classad2.ClassAd(text)


@pytest.mark.parametrize(("text", "state", "reason"), [
    ("[JobStatus = 1]", "QUEUED", None),
    ("[JobStatus = 2]", "ACTIVE", None),
    ("[JobStatus = 6]", "ACTIVE", None),
    ('[JobStatus = 5; HoldReason = "Lark: LarkNetworkProfile: profile \'x\' is not offered"]', "INACTIVE",
     "Lark: LarkNetworkProfile: profile 'x' is not offered"),
    ("[JobStatus = 7]", "INACTIVE", "suspended"),
    ('[JobStatus = 3; RemoveReason = "via condor_rm (by user bob)"]', "CANCELED", "via condor_rm (by user bob)"),
    ("[JobStatus = 4; ExitCode = 0; ExitBySignal = false]", "SUCCEEDED", None),
    ("[JobStatus = 4; ExitCode = 1; ExitBySignal = false]", "FAILED", "the mover exited with status 1"),
    ("[JobStatus = 4; ExitBySignal = true; ExitSignal = 9]", "FAILED", "the mover was killed by signal 9"),
])
def test_job_status_maps_to_transfer_state(text: str, state: str, reason: str | None) -> None:
    assert transfer_state(ad(text)) == (state, reason)


def test_view_of_a_finished_get_counts_bytes_in_and_rate() -> None:
    job = ad('[ClusterId = 42; ProcId = 0; Owner = "bob"; JobStatus = 4; ExitCode = 0; ExitBySignal = false; '
             'QDate = 1000; JobStartDate = 1010; JobCurrentStartDate = 1010; CompletionDate = 1020; '
             'LarkBytesIn = 125000000; LarkBytesOut = 2000000; LarkSourceSite = "FNAL"; LarkInputBytes = 124000000; '
             'LarkTransferVerb = "get"; LarkTransferSource = "ftp:a"; LarkTransferDestination = "/d/a"; '
             'LastRemoteHost = "slot1@node1.example"]')
    view = transfer_view(job, now=5000)
    # 125e6 bytes in 10 s = 100 Mbit/s
    assert (view["id"], view["state"], view["bytes"], view["rate_mbit"]) == ("42.0", "SUCCEEDED", 125_000_000, 100.0)
    assert (view["started"], view["ended"], view["site"], view["host"]) == (1010, 1020, "FNAL", "node1.example")


def test_view_of_a_running_put_counts_bytes_out_until_now() -> None:
    job = ad('[ClusterId = 7; ProcId = 0; JobStatus = 2; JobCurrentStartDate = 100; LarkBytesIn = 10; '
             'LarkBytesOut = 50000000; LarkTransferVerb = "put"]')
    view = transfer_view(job, now=104)
    # 5e7 bytes in 4 s = 100 Mbit/s, no end yet
    assert (view["state"], view["bytes"], view["rate_mbit"], view["ended"]) == ("ACTIVE", 50_000_000, 100.0, None)


def test_view_of_a_removed_idle_job_ends_when_it_entered_the_state() -> None:
    job = ad('[ClusterId = 8; JobStatus = 3; EnteredCurrentStatus = 77; LarkTransferVerb = "get"]')
    view = transfer_view(job, now=100)
    assert (view["state"], view["started"], view["ended"], view["bytes"], view["rate_mbit"]) == (
        "CANCELED", None, 77, None, None)


def test_the_answer_to_a_post_is_the_view_of_the_submitted_job() -> None:
    req = request(verb="get", source="ftp:a.dat", destination="/d/a.dat", size=10, label="x", submission_id="s-1")
    desc = submit_description(req, "/l/s-1")
    view = transfer_view(queued_ad(req, 12, "bob", now=1000.5), now=1000.5)
    assert (view["id"], view["state"], view["owner"], view["submitted"]) == ("12.0", "QUEUED", "bob", 1000)
    # the same values the schedd will hold, read from the submit description's ClassAd literals
    for key, attr in (("source", "+LarkTransferSource"), ("destination", "+LarkTransferDestination"),
                      ("label", "+LarkTransferLabel"), ("submission_id", "+LarkTransferSubmissionId"),
                      ("profile", "+LarkNetworkProfile"), ("site", "+LarkSourceSite"), ("size", "+LarkInputBytes")):
        assert view[key] == classad2.ExprTree(desc[attr]).eval(), key
