"""ClassAd attributes Lark publishes about a job. Pure functions; values built with classad2.

Attribute names are CamelCase and ``Lark``-prefixed so ``condor_q -af`` and ``condor_history -af``
read naturally. Per-class counters take the class name in CamelCase: class ``off_campus`` gives
``LarkBytesInOffCampus``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lark.config import TrafficClass
from lark.firewall.base import JobCounters
from lark.state import JobRecord

SETUP_ERROR_ATTR = "LarkSetupError"


def accounting_attributes(counters: JobCounters, classes: Iterable[TrafficClass]) -> dict[str, int]:
    attrs = {
        "LarkBytesIn": counters.bytes_in,
        "LarkBytesOut": counters.bytes_out,
        "LarkPacketsIn": counters.packets_in,
        "LarkPacketsOut": counters.packets_out,
    }
    for cls in classes:
        c = counters.classes.get(cls.name)
        attrs[f"LarkBytesIn{cls.attribute_suffix}"] = c.bytes_in if c else 0
        attrs[f"LarkBytesOut{cls.attribute_suffix}"] = c.bytes_out if c else 0
    return attrs


def network_attributes(record: JobRecord) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {"LarkNetworkType": record.mode}
    if record.ipv4:
        attrs["LarkIPv4Address"] = record.ipv4.split("/")[0]
    if record.ipv6:
        attrs["LarkIPv6Address"] = record.ipv6.split("/")[0]
    if record.ports:
        attrs["LarkPublicAddress"] = record.public_ipv4 or ""
        attrs["LarkPortRange"] = f"{record.ports[0]}-{record.ports[1]}"
    if record.bandwidth_in_mbit or record.bandwidth_out_mbit:
        attrs["LarkBandwidthInLimitMbit"] = record.bandwidth_in_mbit
        attrs["LarkBandwidthOutLimitMbit"] = record.bandwidth_out_mbit
    return attrs


def expressions(attrs: Mapping[str, object]) -> dict[str, str]:
    """Attribute values as ClassAd expression text (what chirp's set_job_attr takes)."""
    import classad2

    ad = classad2.ClassAd(dict(attrs))
    return {name: str(ad.lookup(name)) for name in attrs}
