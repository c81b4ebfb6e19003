"""``lark-links``: STARTD_CRON job that publishes this node's judged links into its slot ads.

Reads ``LarkNetworkLink`` ads (published by ``lark-spider``) whose destination is this node's site
(``LARK_SITE``, else ``GLIDEIN_Site``), judges each link with the breaker knobs of
``70-lark-matchmaking.conf`` and prints one ``LarkMaxInputBytes_<site>`` per remote site (see
:mod:`lark.links.records`). Runs as the condor user in the host namespace, once per
``STARTD_CRON_LARKLINKS_PERIOD``.

On a bad knob or an unreachable collector it prints only ``LarkLinksError``: the startd keeps the
attributes of the last good run, so the breaker goes on working with them (their age is in
``LarkLinksUpdatedAt``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from lark.links.records import BreakerKnobs, cron_output, links_into

ALLOW = ("allow", "true", "yes")
DENY = ("deny", "false", "no")


class KnobError(ValueError):
    pass


def site_name(param: Callable[[str], str | None]) -> str | None:
    for knob in ("LARK_SITE", "GLIDEIN_Site"):
        value = param(knob)
        if value:
            return str(value).strip().strip('"')
    return None


def _number(param: Callable[[str], str | None], knob: str, default: float) -> float:
    text = param(knob)
    if text is None or not str(text).strip():
        return default
    try:
        value = float(str(text).strip())
    except ValueError:
        value = -1.0
    if value < 0:
        raise KnobError(f"{knob} = {text!r} is not a number >= 0 (condor_config_val -v {knob} shows where it is set)")
    return value


def breaker_knobs(param: Callable[[str], str | None]) -> BreakerKnobs:
    """The knobs, or KnobError naming the bad one."""
    policy = str(param("LARK_UNKNOWN_LINK_POLICY") or "allow").strip().lower()
    if policy not in ALLOW + DENY:
        raise KnobError(f"LARK_UNKNOWN_LINK_POLICY = {policy!r}: expected allow or deny "
                        "(condor_config_val -v LARK_UNKNOWN_LINK_POLICY shows where it is set)")
    defaults = BreakerKnobs()
    return BreakerKnobs(
        max_transfer_seconds=_number(param, "LARK_MAX_TRANSFER_SECONDS", defaults.max_transfer_seconds),
        small_input_bytes=int(_number(param, "LARK_SMALL_INPUT_BYTES", defaults.small_input_bytes)),
        max_loss=_number(param, "LARK_MAX_LOSS", defaults.max_loss),
        max_link_age=_number(param, "LARK_MAX_LINK_AGE", defaults.max_link_age),
        unknown_link_allowed=policy in ALLOW,
    )


def error_output(message: str, site: str | None = None) -> str:
    import classad2

    ad = classad2.ClassAd({"LarkLinksError": message})
    if site:
        ad["LarkSite"] = site
    return ad.printOld() + "- update:true\n"


def main() -> int:
    import classad2
    import htcondor2

    param = htcondor2.param.get
    site = site_name(param)
    if not site:
        sys.stdout.write(error_output("LARK_SITE (or GLIDEIN_Site) is not set on this node"))
        return 0
    try:
        knobs = breaker_knobs(param)
        max_sites = int(_number(param, "LARK_LINKS_MAX_SITES", 500))
    except KnobError as err:
        sys.stdout.write(error_output(str(err), site))
        return 0
    try:
        ads = htcondor2.Collector().query(
            htcondor2.AdType.Any,
            constraint=f'MyType == "LarkNetworkLink" && LarkDestinationSite == {classad2.quote(site)}')
    except Exception as err:  # the collector being away must not kill the cron; keep the last data
        sys.stdout.write(error_output(f"cannot query the collector: {err}", site))
        return 0
    links = links_into(site, (dict(ad.items()) for ad in ads), max_sites)
    sys.stdout.write(cron_output(site, links, knobs, int(time.time())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
