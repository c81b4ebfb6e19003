"""The attachment-mode registry: every list of modes derives from it, and docs/modes.md matches it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from lark import attach
from lark.attach.base import Mode
from lark.config import load_config
from lark.errors import ConfigError, RequestError
from lark.policy import request_from_attributes

ROOT = Path(__file__).resolve().parents[2]


def test_docs_table_is_the_registry() -> None:
    text = (ROOT / "docs" / "modes.md").read_text()
    assert attach.facts_table() in text
    # and every mode module under lark/attach/ is registered (a new file cannot be forgotten)
    files = {p.stem for p in (ROOT / "lark" / "attach").glob("*.py")} - {"__init__", "base"}
    assert files == set(attach.mode_names())


def test_the_engine_compares_no_mode_names() -> None:
    source = (ROOT / "lark" / "engine.py").read_text() + (ROOT / "lark" / "reconcile.py").read_text()
    quoted = {f'"{name}"' for name in attach.mode_names()} | {f"'{name}'" for name in attach.mode_names()}
    assert [q for q in quoted if q in source] == []


def test_facts_the_engine_relies_on() -> None:
    # a mode without an interface can have nothing counted, shaped or firewalled
    for m in attach.modes():
        if not m.job_interface:
            assert not (m.host_interface or m.job_side_firewall or m.shaping or m.masquerade or m.site)
        if m.port_forwarding:  # forwarded host ports need the host to route the job's traffic
            assert m.routed
    assert attach.mode("nat").port_forwarding and attach.mode("bridge").site is not None


def test_every_offered_mode_is_accepted_and_site_modes_need_their_knobs(tmp_path: Path) -> None:
    for m in attach.modes():
        overrides = {"LARK_NETWORK_TYPES": m.name, "LARK_DEFAULT_NETWORK_TYPE": m.name}
        if m.site is None:
            assert load_config([], overrides).network_types == (m.name,)
            continue
        with pytest.raises(ConfigError) as info:
            load_config([], overrides)
        assert info.value.knob == m.site.parent.name
        overrides |= {m.site.parent.name: "eth9", m.site.ipv4_pool.name: "192.0.2.0/24"}
        config = load_config([], overrides)
        assert config.site_attachments[m.name].parent == "eth9"
        assert str(config.site_attachments[m.name].ipv4.network) == "192.0.2.0/24"  # type: ignore[union-attr]


def test_gateway_of_the_wrong_family_names_its_knob() -> None:
    with pytest.raises(ConfigError, match="LARK_MACVLAN_IPV6_GATEWAY: 192.0.2.1 is not an IPv6 address"):
        load_config([], {"LARK_MACVLAN_IPV6_GATEWAY": "192.0.2.1"})


def dummy(name: str) -> Mode:
    def nothing(*_: object) -> None:
        return None

    return Mode(name=name, summary="test", allocate=nothing, up=nothing, down=nothing, check=lambda *_: [],
                job_interface=False, job_side_firewall=False, shaping=False)


def test_a_registered_mode_is_offered_and_requested_and_goes_again() -> None:
    attach.register(dummy("quiet"))
    try:
        config = load_config([], {"LARK_NETWORK_TYPES": "nat, quiet"})
        request = request_from_attributes({"LarkNetworkType": "quiet"}, config, "1.0")
        assert request.network_type == "quiet"
        with pytest.raises(ValueError, match="already registered"):
            attach.register(dummy("quiet"))
        # replacing keeps the mode's place in the registry (the order messages list modes in)
        names = attach.mode_names()
        loud = dataclasses.replace(dummy("quiet"), summary="replaced")
        attach.register(loud, replace=True)
        assert attach.mode("quiet") is loud and attach.mode_names() == names
    finally:
        attach.unregister("quiet")
    with pytest.raises(RequestError, match=re.escape('unknown network type "quiet"')):
        request_from_attributes({"LarkNetworkType": "quiet"}, load_config([]), "1.0")
    with pytest.raises(attach.UnknownMode, match="unknown attachment mode 'quiet'"):
        attach.mode("quiet")
    with pytest.raises(ValueError, match="nothing to replace"):
        attach.register(dummy("quiet"), replace=True)


@pytest.mark.parametrize("name", ["Loud", "two words", "x-y"])
def test_mode_names_are_lower_case_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="lower-case identifier"):
        attach.register(dummy(name))


def test_every_module_of_the_package_is_a_registered_mode_in_rank_order() -> None:
    """Adding a mode is one file: the registry collects each module's MODE, nothing is listed by hand."""
    package = Path(attach.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "base"}
    assert set(attach.mode_names()) == modules
    ranks = [(m.rank, m.name) for m in attach.modes()]
    assert ranks == sorted(ranks)
    assert attach.mode_names()[0] == "nat" and attach.mode_names()[-1] == "none"  # default first, loopback last
