"""``lark-links``: STARTD_CRON job that copies the link ads into this node's slot ads.

Reads ``LarkNetworkLink`` ads (published by ``lark-spider``) whose destination is this node's site
(``LARK_SITE``, else ``GLIDEIN_Site``) and prints ``LarkSite`` and ``LarkLinks``. Runs as the
condor user in the host namespace, once per ``STARTD_CRON_LARKLINKS_PERIOD``.
"""

from __future__ import annotations

import sys
import time

from lark.links.records import cron_output, links_into


def site_name() -> str | None:
    import htcondor2

    for knob in ("LARK_SITE", "GLIDEIN_Site"):
        value = htcondor2.param.get(knob)
        if value:
            return str(value).strip().strip('"')
    return None


def main() -> int:
    import classad2
    import htcondor2

    site = site_name()
    if not site:
        print("LarkLinksError = \"LARK_SITE (or GLIDEIN_Site) is not set on this node\"\n- update:true")
        return 0
    try:
        ads = htcondor2.Collector().query(
            htcondor2.AdType.Any,
            constraint=f'MyType == "LarkNetworkLink" && LarkDestinationSite == {classad2.quote(site)}')
    except Exception as err:  # the collector being away must not kill the cron; keep going
        print(f"LarkSite = {classad2.quote(site)}\nLarkLinksError = {classad2.quote(str(err))}\n- update:true")
        return 0
    max_sites = int(htcondor2.param.get("LARK_LINKS_MAX_SITES", "500"))
    links = links_into(site, (dict(ad.items()) for ad in ads), max_sites)
    sys.stdout.write(cron_output(site, links, int(time.time())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
