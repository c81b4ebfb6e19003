"""``lark doctor``'s verdicts over facts written the way HTCondor and the broker give them.

The answers below are what the test pool's HTCondor 25.14 printed (condor_config_val -startd,
condor_status -json) and what lark-netd answers to ping; the kernel probe runs for real in its own
throwaway namespace (root).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

import pytest

from lark.doctor import (
    Answer,
    NodeFacts,
    ask_daemon,
    exit_status,
    format_checks,
    needed_features,
    probe_kernel,
    run_checks,
    slot_ads,
)

EXECUTE_AND_SUBMIT = "MASTER, COLLECTOR, NEGOTIATOR, SCHEDD, STARTD LARK_NETD"
TRANSFORM_NAMES = "LarkNetwork LarkHold LarkSite LarkLink"
LARK_NETWORK = "\n   DEFAULT WantJobNetworking false\n   SET WantIOProxy true\n"


def healthy(**changes: object) -> NodeFacts:
    facts = NodeFacts(
        daemon_list=EXECUTE_AND_SUBMIT, cli_version="0.1.0", socket_path="/run/lark/netd.sock",
        broker_reply={"ok": True, "version": "0.1.0"},
        startd={"NO_JOB_NETWORKING": Answer("True"), "USER_JOB_WRAPPER": Answer("/opt/lark/bin/lark-wrap"),
                "CHIRP_DELAYED_UPDATE_PREFIX": Answer("Chirp*, Lark*, NetworkInputMb, NetworkOutputMb")},
        schedd={"JOB_TRANSFORM_NAMES": Answer(TRANSFORM_NAMES), "JOB_TRANSFORM_LarkNetwork": Answer(LARK_NETWORK)},
        slots=[{"Name": "slot1@node", "HasLark": True, "LarkNetworkTypes": "nat, none"},
               {"Name": "slot2@node", "HasLark": True, "LarkNetworkTypes": "nat, none"}],
        firewall="nftables", network_types=("nat", "none"), kernel={"veth": None, "tbf": None})
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def verdicts(facts: NodeFacts) -> dict[str, str]:
    return {c.name: c.status for c in run_checks(facts)}


def test_a_healthy_execute_and_submit_node_passes_every_check() -> None:
    checks = run_checks(healthy())
    assert {c.name for c in checks} == {"broker", "versions", "no-job-networking", "job-wrapper", "slots",
                                        "chirp-prefix", "firewall", "kernel-veth", "kernel-tbf", "transforms"}
    assert all(c.status == "ok" for c in checks), format_checks(checks)
    assert exit_status(checks) == 0


def test_a_startd_not_yet_restarted_is_named_with_the_restart_as_fix() -> None:
    facts = healthy(startd={**healthy().startd, "NO_JOB_NETWORKING": Answer("false")})
    (check,) = [c for c in run_checks(facts) if c.name == "no-job-networking"]
    assert check.status == "fail"
    assert "condor_restart -daemon startd" in check.fix
    assert exit_status(run_checks(facts)) == 1


def test_a_startd_that_is_down_says_so_and_suggests_waiting() -> None:
    down = Answer(error="Can't find address for local startd Perhaps you need to query another pool.")
    facts = healthy(startd={k: down for k in healthy().startd}, slots=[])
    v = verdicts(facts)
    assert (v["no-job-networking"], v["job-wrapper"], v["chirp-prefix"], v["slots"]) == ("fail",) * 4
    text = format_checks(run_checks(facts))
    assert "Can't find address for local startd" in text
    assert "lark doctor --wait 60" in text


def test_slots_without_has_lark_are_named() -> None:
    facts = healthy(slots=[{"Name": "slot1@node", "HasLark": True}, {"Name": "slot2@node"}])
    (check,) = [c for c in run_checks(facts) if c.name == "slots"]
    assert check.status == "fail" and "slot2@node" in check.detail and "slot1@node" not in check.detail


def test_a_missing_broker_fails_and_its_version_is_unknown_not_matched() -> None:
    facts = healthy(broker_reply=None, broker_error="[Errno 2] No such file or directory")
    v = verdicts(facts)
    assert v["broker"] == "fail" and v["versions"] == "warn"
    assert "No such file or directory" in format_checks(run_checks(facts))


def test_versions_must_match_and_a_silent_broker_is_a_warning() -> None:
    assert verdicts(healthy(broker_reply={"ok": True, "version": "0.0.9"}))["versions"] == "fail"
    assert verdicts(healthy(broker_reply={"ok": True}))["versions"] == "warn"
    assert exit_status(run_checks(healthy(broker_reply={"ok": True}))) == 0  # warnings do not fail


def test_chirp_prefix_without_the_counters_fails() -> None:
    facts = healthy(startd={**healthy().startd, "CHIRP_DELAYED_UPDATE_PREFIX": Answer("Chirp*")})
    (check,) = [c for c in run_checks(facts) if c.name == "chirp-prefix"]
    assert check.status == "fail" and "Lark*" in check.detail
    everything = healthy(startd={**healthy().startd, "CHIRP_DELAYED_UPDATE_PREFIX": Answer("*")})
    assert verdicts(everything)["chirp-prefix"] == "ok"


def test_the_submit_side_needs_all_four_transforms_and_the_io_proxy() -> None:
    two = healthy(schedd={"JOB_TRANSFORM_NAMES": Answer("LarkNetwork LarkHold"),
                          "JOB_TRANSFORM_LarkNetwork": Answer(LARK_NETWORK)})
    (check,) = [c for c in run_checks(two) if c.name == "transforms"]
    assert check.status == "fail" and "LarkSite, LarkLink" in check.detail
    no_proxy = healthy(schedd={"JOB_TRANSFORM_NAMES": Answer(TRANSFORM_NAMES),
                               "JOB_TRANSFORM_LarkNetwork": Answer("\n   DEFAULT WantJobNetworking false\n")})
    assert verdicts(no_proxy)["transforms"] == "fail"


def test_roles_come_from_daemon_list() -> None:
    submit_only = healthy(daemon_list="MASTER, SCHEDD")
    assert set(verdicts(submit_only)) == {"transforms"}
    execute_only = healthy(daemon_list="MASTER STARTD LARK_NETD")
    assert "transforms" not in verdicts(execute_only) and "broker" in verdicts(execute_only)
    (check,) = run_checks(healthy(daemon_list="MASTER"))
    assert (check.name, check.status) == ("role", "fail")


def test_the_kernel_features_follow_the_offered_modes() -> None:
    assert needed_features(["nat", "none"]) == ["veth", "tbf"]
    assert needed_features(["nat", "bridge", "ipvlan"]) == ["veth", "tbf", "bridge", "ipvlan"]
    facts = healthy(network_types=("nat", "ipvlan"),
                    kernel={"veth": None, "tbf": None, "ipvlan": "(95, 'Operation not supported')"})
    (check,) = [c for c in run_checks(facts) if c.name == "kernel-ipvlan"]
    assert check.status == "fail" and "Operation not supported" in check.detail and "ipvlan" in check.fix
    parent_missing = healthy(network_types=("nat", "bridge"), kernel={"veth": None, "tbf": None, "bridge": None},
                             parents={"LARK_BRIDGE": False})
    assert verdicts(parent_missing)["parent-LARK_BRIDGE"] == "fail"


def test_json_lists_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    from lark.doctor import checks_json

    rows = json.loads(checks_json(run_checks(healthy())))
    assert {r["name"] for r in rows} >= {"broker", "transforms"}
    assert set(rows[0]) == {"name", "status", "detail", "fix"}


def fake_run(stdout: str, returncode: int = 0, stderr: str = ""):  # noqa: ANN201
    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), returncode, stdout, stderr)
    return run


def test_daemon_answers_are_read_as_condor_config_val_prints_them() -> None:
    assert ask_daemon("startd", "NO_JOB_NETWORKING", fake_run("True\n")).value == "True"
    answer = ask_daemon("startd", "X", fake_run("", 1, "Can't find address for local startd\n"))
    assert answer.value is None and answer.error == "Can't find address for local startd"


def test_slot_ads_are_read_from_condor_status_json() -> None:
    text = json.dumps([{"HasLark": True, "Name": "slot1@node", "LarkNetworkTypes": "nat, none"}])
    slots, error = slot_ads("node", fake_run(text))
    assert error is None and slots == [{"HasLark": True, "Name": "slot1@node", "LarkNetworkTypes": "nat, none"}]
    assert slot_ads("node", fake_run("")) == ([], None)  # condor_status prints nothing when nothing matches
    assert slot_ads("node", fake_run("", 1, "Error: couldn't contact the collector"))[0] is None


def test_the_kernel_probe_really_creates_each_object(require_root: None) -> None:
    results = probe_kernel(["veth", "bridge", "macvlan", "tbf"])
    assert results == {"veth": None, "bridge": None, "macvlan": None, "tbf": None}
    assert probe_kernel([]) == {}


def test_a_role_can_be_checked_alone() -> None:
    execute = healthy(only_roles=("execute",), schedd={})
    assert "transforms" not in verdicts(execute) and exit_status(run_checks(execute)) == 0
    submit = healthy(only_roles=("submit",), daemon_list="MASTER")
    assert set(verdicts(submit)) == {"transforms"}


def test_a_wrapper_that_would_ask_another_socket_fails_with_the_line_to_write() -> None:
    assert verdicts(healthy(wrapper_socket="/run/lark/netd.sock"))["wrapper-socket"] == "ok"
    moved = healthy(socket_path="/var/run/lark-netd.sock", wrapper_socket="/run/lark/netd.sock")
    [check] = [c for c in run_checks(moved) if c.name == "wrapper-socket"]
    assert check.status == "fail" and "socket = /var/run/lark-netd.sock" in (check.fix or "")
    assert exit_status(run_checks(moved)) == 1


def test_dhcp_addressing_needs_the_client() -> None:
    assert "dhcp-bridge" not in verdicts(healthy())  # no DHCP asked, nothing checked
    assert verdicts(healthy(dhcp_client={"bridge": None}))["dhcp-bridge"] == "ok"
    facts = healthy(dhcp_client={"macvlan": "DHCP addressing needs busybox's udhcpc"})
    [check] = [c for c in run_checks(facts) if c.name == "dhcp-macvlan"]
    assert check.status == "fail" and "udhcpc" in (check.fix or "")
