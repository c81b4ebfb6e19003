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
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path

from lark.errors import ConfigError
from lark.knobs import ConfigReader
from lark.links.knobs import BREAKER_FIELDS, LINKS_CACHE, SITE, parse_policy
from lark.links.knobs import KNOBS as KNOB_DECLARATIONS
from lark.links.records import BreakerKnobs, cron_output, links_into, site_key

Param = Callable[[str], str | None]
__all__ = ["KNOBS", "parse_policy", "read_knobs", "run"]

# knob name -> (BreakerKnobs field, parser); a knob that is not set keeps the field's default
KNOBS: dict[str, tuple[str, Callable[[str], object]]] = {k.name: (f, k.parse) for k, f in BREAKER_FIELDS.items()}
assert {field for field, _ in KNOBS.values()} == {f.name for f in fields(BreakerKnobs)}


def site_name(param: Param) -> str | None:
    for knob in (SITE.name, "GLIDEIN_Site"):
        value = param(knob)
        if value:
            return str(value).strip().strip('"')
    return None


def read_knobs(param: Param, fallback: Mapping[str, str] | None = None
               ) -> tuple[BreakerKnobs, dict[str, str], list[ConfigError]]:
    """The knobs, the texts that parsed (what a later run may fall back on), and one error per bad
    knob. A bad knob takes its value from ``fallback`` (the last good run's text), else its default:
    one typo never discards the other knobs."""
    values: dict[str, object] = {}
    good: dict[str, str] = {}
    errors: list[ConfigError] = []
    for knob, (field, parse) in KNOBS.items():
        text = param(knob)
        if text is None or not str(text).strip():
            continue
        try:
            values[field] = parse(str(text))
            good[knob] = str(text)
        except ValueError as err:
            errors.append(ConfigError(knob, f"{err} (condor_config_val -v {knob} shows where it is set)"))
            if fallback and knob in fallback:
                try:
                    values[field] = parse(fallback[knob])
                    good[knob] = fallback[knob]
                except ValueError:
                    pass
    return BreakerKnobs(**values), good, errors  # type: ignore[arg-type]


def breaker_knobs(param: Param) -> BreakerKnobs:
    """The knobs, or the ConfigError of the first bad one."""
    knobs, _, errors = read_knobs(param)
    if errors:
        raise errors[0]
    return knobs


def error_output(message: str, knobs: BreakerKnobs, site: str | None = None) -> str:
    """Only for a run that could not judge anything: it also publishes the small-input limit for
    unknown links, so that large jobs wait instead of passing a check that finds no attributes."""
    import classad2

    ad = classad2.ClassAd({"LarkLinksError": message, "LarkUnknownLinkMaxInputBytes": knobs.small_input_bytes})
    if site:
        ad["LarkSite"] = site
    return ad.printOld() + "- update:true\n"


LastGood = tuple[dict[str, str], dict[str, dict[str, object]], int]  # knob texts, links, when read


def load_last_good(path: Path, site: str) -> tuple[LastGood | None, str]:
    """The knob texts and links of this site's last good run, or None, and what was wrong with the
    file ("" when it is fine or absent). The knob texts are parsed again like the live ones, so a
    damaged value cannot slip through; links kept for another site (LARK_SITE changed) are not used."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as err:
        return None, f"ignored the damaged cache {path}: {err}"
    try:
        knobs, links, read_at = data["knobs"], data["links"], int(data["read_at"])
        if not (isinstance(knobs, dict) and all(isinstance(v, str) for v in knobs.values())
                and isinstance(links, dict) and all(isinstance(v, dict) for v in links.values())):
            raise TypeError("unexpected shape")
    except (KeyError, TypeError, ValueError) as err:
        return None, f"ignored the damaged cache {path}: {err}"
    if data.get("site") != site:
        links = {}  # another site's links mean nothing here; its knob texts still apply
    return (knobs, links, read_at), ""


def save_last_good(path: Path, site: str, knobs: Mapping[str, str], links: Mapping[str, object],
                   read_at: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"site": site, "knobs": dict(knobs), "links": links, "read_at": read_at}))
    tmp.replace(path)  # atomic: a crash mid-write never leaves half a cache


def run(site: str, param: Param, query: Callable[[], list[dict[str, object]]], cache: Path | None, now: int) -> str:
    """One cron run. Whatever fails (a knob, the collector) is reported in ``LarkLinksError`` and
    the part that failed comes from the last good run, judged again now: the limits stay, and old
    measurements still turn into "broken" links as they age. Without a good run to fall back on, a
    bad knob keeps its default and the links are none: the unknown-link policy then decides, and
    this site's own data stays unlimited (never "no attributes", which would let everything pass)."""
    last, cache_problem = load_last_good(cache, site) if cache else (None, "")
    knobs, knob_texts, knob_errors = read_knobs(param, last[0] if last else None)
    errors = [str(err) for err in knob_errors] + ([cache_problem] if cache_problem else [])
    try:
        answer = query()
    except Exception as err:  # the collector being away must not kill the cron; keep the last data
        errors.append(f"cannot query the collector: {err}")
        links, read_at = (last[1], last[2]) if last else ({}, now)
    else:
        links, read_at = links_into(site, answer), now
        if cache:  # fresh links are worth keeping even when a knob is bad (its last good text is kept)
            try:
                save_last_good(cache, site, knob_texts, links, now)
            except OSError as err:
                errors.append(f"cannot keep the last good links in {cache}: {err}")
    return cron_output(site, links, knobs, now, error="; ".join(errors), links_read_at=read_at)


USAGE = """usage: lark-links

A startd cron (STARTD_CRON_LARKLINKS): prints the node's network link attributes for its machine ad
from the LarkNetworkLink ads the spider publishes, for the circuit breakers (docs/matchmaking.md).
Takes no arguments; --version and --help answer without running it."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:  # the startd passes no arguments: anything given is a person asking
        if args == ["--version"]:
            from lark import __version__

            print(f"lark-links {__version__}")
            return 0
        asked = args in (["--help"], ["-h"])
        print(USAGE, file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    import classad2
    import htcondor2

    # Lark's one reader: HTCondor's own lookup (the cron runs under the startd, bindings present)
    param = ConfigReader().lookup(KNOB_DECLARATIONS)
    knobs = read_knobs(param)[0]  # for the fail-closed answers below: the node's small-input limit
    site = site_name(param)
    if not site:
        sys.stdout.write(error_output("LARK_SITE (or GLIDEIN_Site) is not set on this node", knobs))
        return 0

    def query() -> list[dict[str, object]]:
        ads = htcondor2.Collector().query(
            htcondor2.AdType.Any,
            # by the normalised key the spider publishes (older spiders: the name as spelt)
            constraint=f'MyType == "LarkNetworkLink" && (LarkDestinationSiteKey =?= {classad2.quote(site_key(site))}'
                       f' || LarkDestinationSite == {classad2.quote(site)})')
        return [dict(ad.items()) for ad in ads]

    cache_text = param(LINKS_CACHE.name) or (f"{param('SPOOL')}/lark-links.json" if param("SPOOL") else "")
    try:
        sys.stdout.write(run(site, param, query, Path(cache_text) if cache_text else None, int(time.time())))
    except Exception as err:  # a cron that dies prints nothing; this at least says why, and fails closed
        sys.stdout.write(error_output(f"lark-links failed: {type(err).__name__}: {err}", knobs, site))
    return 0


if __name__ == "__main__":
    sys.exit(main())
