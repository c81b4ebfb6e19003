"""``lark-links``: STARTD_CRON job that publishes this node's judged links into its slot ads.

Reads ``LarkNetworkLink`` ads (published by ``lark-spider``) whose destination is this node's site
(``LARK_SITE``, else ``GLIDEIN_Site``), judges each link with the breaker knobs of
``70-lark-matchmaking.conf`` and prints one ``LarkMaxInputBytes_<site>`` per remote site (see
:mod:`lark.links.records`). Runs as the condor user in the host namespace, once per
``STARTD_CRON_LARKLINKS_PERIOD``.

On a bad knob or an unreachable collector it says so in ``LarkLinksError`` and publishes the last
good knobs and links (kept in ``LARK_LINKS_CACHE``, default ``$(SPOOL)/lark-links.json``), judged
again: the startd replaces a cron's attributes on every run, so printing only the error would drop
the limits. ``LarkLinksUpdatedAt`` is when the links were last read.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from lark.links.records import BreakerKnobs, cron_output, links_into, most_restrictive

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


MAX_BYTES = float(1 << 62)  # byte knobs stay integers the ClassAd library can hold


def _number(param: Callable[[str], str | None], knob: str, default: float, maximum: float = 1e12) -> float:
    text = param(knob)
    if text is None or not str(text).strip():
        return default
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    if not 0 <= value <= maximum:  # also NaN and infinities
        raise KnobError(f"{knob} = {text!r} is not a number from 0 to {maximum:g} "
                        f"(condor_config_val -v {knob} shows where it is set)")
    return value


def _flag(param: Callable[[str], str | None], knob: str) -> bool:
    text = str(param(knob) or "false").strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise KnobError(f"{knob} = {text!r}: expected True or False "
                    f"(condor_config_val -v {knob} shows where it is set)")


def breaker_knobs(param: Callable[[str], str | None]) -> BreakerKnobs:
    """The knobs, or KnobError naming the bad one."""
    policy = str(param("LARK_UNKNOWN_LINK_POLICY") or "allow").strip().lower()
    if policy not in ALLOW + DENY:
        raise KnobError(f"LARK_UNKNOWN_LINK_POLICY = {policy!r}: expected allow or deny "
                        "(condor_config_val -v LARK_UNKNOWN_LINK_POLICY shows where it is set)")
    defaults = BreakerKnobs()
    return BreakerKnobs(
        max_transfer_seconds=_number(param, "LARK_MAX_TRANSFER_SECONDS", defaults.max_transfer_seconds),
        small_input_bytes=int(_number(param, "LARK_SMALL_INPUT_BYTES", defaults.small_input_bytes, MAX_BYTES)),
        max_loss=_number(param, "LARK_MAX_LOSS", defaults.max_loss, 1.0),
        max_link_age=_number(param, "LARK_MAX_LINK_AGE", defaults.max_link_age),
        unknown_link_allowed=policy in ALLOW,
        publish_record=_flag(param, "LARK_LINKS_PUBLISH_RECORD"),
    )


def error_output(message: str, site: str | None = None) -> str:
    import classad2

    ad = classad2.ClassAd({"LarkLinksError": message})
    if site:
        ad["LarkSite"] = site
    return ad.printOld() + "- update:true\n"


def load_last_good(path: Path) -> tuple[BreakerKnobs, dict[str, dict[str, object]], int] | None:
    """The knobs and links of the last run that had both, or None (no file, or a damaged one)."""
    try:
        data = json.loads(path.read_text())
        return BreakerKnobs(**data["knobs"]), dict(data["links"]), int(data["read_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_last_good(path: Path, knobs: BreakerKnobs, links: dict[str, dict[str, object]], read_at: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"knobs": asdict(knobs), "links": links, "read_at": read_at}))
    tmp.replace(path)  # atomic: a crash mid-write never leaves half a cache


def run(site: str, param: Callable[[str], str | None], query: Callable[[], list[dict[str, object]]],
        cache: Path | None, now: int) -> str:
    """One cron run. Whatever fails (a knob, the collector) is reported in ``LarkLinksError`` and
    the part that failed comes from the last good run, judged again now: the limits stay, and old
    measurements still turn into "broken" links as they age. Without a good run to fall back on it
    publishes the documented default knobs and no links: the unknown-link policy then decides, and
    this site's own data stays unlimited (never "no attributes", which would let everything pass)."""
    errors: list[str] = []
    last = load_last_good(cache) if cache else None
    try:
        knobs = breaker_knobs(param)
        max_sites = int(_number(param, "LARK_LINKS_MAX_SITES", 500, 100000))
    except KnobError as err:
        errors.append(str(err))
        knobs, max_sites = (last[0] if last else BreakerKnobs()), 500
    read_at = now
    try:
        links = links_into(site, query())
    except Exception as err:  # the collector being away must not kill the cron; keep the last data
        errors.append(f"cannot query the collector: {err}")
        links, read_at = (last[1], last[2]) if last else ({}, now)
    published = most_restrictive(links, knobs, now, max_sites)
    if not errors and cache:
        try:
            save_last_good(cache, knobs, links, now)
        except OSError as err:
            errors.append(f"cannot keep the last good links in {cache}: {err}")
    return cron_output(site, published, knobs, now, error="; ".join(errors), links_read_at=read_at,
                       not_published=len(links) - len(published))


def main() -> int:
    import classad2
    import htcondor2

    param = htcondor2.param.get
    site = site_name(param)
    if not site:
        sys.stdout.write(error_output("LARK_SITE (or GLIDEIN_Site) is not set on this node"))
        return 0

    def query() -> list[dict[str, object]]:
        ads = htcondor2.Collector().query(
            htcondor2.AdType.Any,
            constraint=f'MyType == "LarkNetworkLink" && LarkDestinationSite == {classad2.quote(site)}')
        return [dict(ad.items()) for ad in ads]

    cache_text = param("LARK_LINKS_CACHE") or (f"{param('SPOOL')}/lark-links.json" if param("SPOOL") else "")
    try:
        sys.stdout.write(run(site, param, query, Path(cache_text) if cache_text else None, int(time.time())))
    except Exception as err:  # a cron that dies prints nothing; this at least says why in the slot ads
        sys.stdout.write(error_output(f"lark-links failed: {type(err).__name__}: {err}", site))
    return 0


if __name__ == "__main__":
    sys.exit(main())
