"""Lark's perfSONAR spider: perfSONAR measurements -> ``LarkNetworkLink`` ClassAds in the collector.

Layout (one concern per module; pure functions decide, thin edges do I/O):

* :mod:`perfsonar.discovery` — fetching publishers, meshes and the Lookup Service -> one inventory
* :mod:`perfsonar.meshes` — pSConfig/MeshConfig documents -> test pairs, cadences, archives, hosts' sites (pure)
* :mod:`perfsonar.meshindex` — measured series -> their mesh pair (by name or address): cadence, coverage
* :mod:`perfsonar.esmond`, :mod:`perfsonar.opensearch` — archive readers -> :class:`~perfsonar.model.HostSeries`
* :mod:`perfsonar.normalise` — units and plausibility (pure)
* :mod:`perfsonar.quality` — statistics and grades per site pair (pure)
* :mod:`perfsonar.sites` — host -> site from every source in order, each decision explained (pure)
* :mod:`perfsonar.registries` — OSG Topology, GOCDB and CRIC exports -> registry entries (pure)
* :mod:`perfsonar.pool` — the HTCondor pool's slot ads -> perfSONAR hosts and domains per site
* :mod:`perfsonar.ads` — ``LarkNetworkLink`` ClassAds (pure, real ``classad2``)
* :mod:`perfsonar.publish` — advertising to the collector with IDTOKENS
* :mod:`perfsonar.state` — last good values across outages
* :mod:`perfsonar.config` — the YAML config and LARK_SPIDER_* knobs
* :mod:`perfsonar.crawl` — one crawl wiring it all together; :mod:`perfsonar.main` — the CLI
"""

from perfsonar.ads import MY_TYPE, build_link_ad, build_link_ads
from perfsonar.config import SpiderConfig, load_spider_config, parse_config
from perfsonar.crawl import CrawlResult, Spider
from perfsonar.publish import invalidate_links, publish_ads

__all__ = ["MY_TYPE", "CrawlResult", "Spider", "SpiderConfig", "build_link_ad", "build_link_ads",
           "invalidate_links", "load_spider_config", "parse_config", "publish_ads"]
