"""What an execute node publishes about its links: pure functions over ``LarkNetworkLink`` ads.

The negotiator cannot join ads, so each execute node copies the links *into* its site into its slot
ads as one nested record keyed by the remote site::

    LarkSite = "UNL"
    LarkLinks = [ FNAL = [ Mbps = 940.0; Loss = 0.0001; MeasuredAt = 1795300000; Quality = "good" ]; ... ]

Only the four fields the circuit breaker and the rank read are copied (a 100-site record costs the
startd ~67 KB per slot; every extra field multiplies that). Lookups must be written
``LarkLinks[TARGET.LarkSourceSite]["Mbps"]``: the ``.Mbps`` form yields undefined.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import classad2

# attribute in a LarkNetworkLink ad -> field in the slot's record
FIELDS = {
    "LarkThroughputMbps": "Mbps",
    "LarkLossFraction": "Loss",
    "LarkMeasuredAt": "MeasuredAt",
    "LarkQuality": "Quality",
}
PREFERRED_FAMILY = 4  # jobs' transfers use IPv4 unless a site has only IPv6 measurements


def _value(ad: Mapping[str, object], name: str) -> object | None:
    value = ad.get(name)
    if value is None or isinstance(value, classad2.Value):
        return None
    return value


def links_into(site: str, ads: Iterable[Mapping[str, object]], max_sites: int = 500) -> dict[str, dict[str, object]]:
    """One record per remote site for the links whose destination is ``site``.

    Where a site pair has both families, the IPv4 link wins; a link graded ``unknown`` carries no
    figures and is left out (the breaker's unknown-link policy then applies to it).
    """
    chosen: dict[str, tuple[int, dict[str, object]]] = {}
    for ad in ads:
        if _value(ad, "LarkDestinationSite") != site:
            continue
        remote = _value(ad, "LarkSourceSite")
        if not isinstance(remote, str) or not remote or remote == site:
            continue
        record = {field: v for attr, field in FIELDS.items() if (v := _value(ad, attr)) is not None}
        if "Mbps" not in record or record.get("Quality") == "unknown":
            continue
        family = _value(ad, "LarkIPFamily")
        rank = 0 if family == PREFERRED_FAMILY else 1
        if remote not in chosen or rank < chosen[remote][0]:
            chosen[remote] = (rank, record)
    names = sorted(chosen)[:max_sites]
    return {name: chosen[name][1] for name in names}


def cron_output(site: str, links: Mapping[str, Mapping[str, object]], now: int) -> str:
    """STARTD_CRON output: ``Attr = value`` lines rendered by classad2, then ``- update:true``."""
    ad = classad2.ClassAd()
    ad["LarkSite"] = site
    ad["LarkLinks"] = classad2.ClassAd({name: classad2.ClassAd(dict(rec)) for name, rec in links.items()})
    ad["LarkLinksUpdatedAt"] = int(now)
    ad["LarkLinksCount"] = len(links)
    return ad.printOld() + "- update:true\n"
