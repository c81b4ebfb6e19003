"""Advertise link ads to an HTCondor collector (the only module that talks to HTCondor).

Generic ads need **DAEMON** authorisation at the collector (verified on the test pool): the spider
authenticates with an IDTOKEN whose identity the collector lists in ``ALLOW_DAEMON``, e.g.
``COLLECTOR.ALLOW_DAEMON = $(ALLOW_DAEMON) lark@<uid-domain>``. The token file must be mode 0600 or
the client refuses it. The bindings read security settings from the configuration at authentication
time, so the token directory and method are set as ``_CONDOR_*`` environment variables and the
configuration is reloaded before advertising.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator

import classad2

from perfsonar.errors import PublishError

UPDATE_COMMAND = "UPDATE_AD_GENERIC"
INVALIDATE_COMMAND = "INVALIDATE_ADS_GENERIC"


def configure_security(token_dir: str | None, methods: str = "IDTOKENS") -> None:
    """Point the HTCondor client at ``token_dir`` and restrict it to ``methods`` (default IDTOKENS).

    With ``token_dir=None`` the environment and condor_config are left as they are (e.g. when the
    spider runs under condor_master, which already set them).
    """
    import htcondor2

    if token_dir is None:
        return
    if not os.path.isdir(token_dir):
        raise PublishError(f"token directory {token_dir} does not exist")
    os.environ["_CONDOR_SEC_TOKEN_DIRECTORY"] = token_dir
    os.environ["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] = methods
    htcondor2.reload_config()


def _batches(ads: Iterable[classad2.ClassAd], size: int) -> Iterator[list[classad2.ClassAd]]:
    it = iter(ads)
    while batch := list(itertools.islice(it, size)):
        yield batch


def publish_ads(ads: Iterable[classad2.ClassAd], collector: str | None = None, token_dir: str | None = None,
                batch_size: int = 1000) -> int:
    """Send ``ads`` with ``UPDATE_AD_GENERIC``; returns how many were sent.

    ``collector`` is ``host[:port]`` (None: the local pool's ``COLLECTOR_HOST``). ``ads`` may be a
    generator: ads are built and sent in batches, which bounds both one update message and the
    memory held by ClassAds at OSG scale. Raises :class:`PublishError` naming the collector.
    """
    return publish_batches(_batches(ads, batch_size), collector, token_dir)


def publish_batches(batches: Iterable[list[classad2.ClassAd]], collector: str | None = None,
                    token_dir: str | None = None) -> int:
    """Like :func:`publish_ads` for ready-made batches (e.g. :meth:`perfsonar.crawl.Spider.ad_batches`).

    Each batch is advertised before the next is requested, so batches may recycle ClassAd objects.
    """
    import htcondor2

    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return 0
    configure_security(token_dir)
    where = collector or "the local collector"
    try:
        coll = htcondor2.Collector(collector) if collector else htcondor2.Collector()
        sent = 0
        for batch in itertools.chain([first], batches):
            coll.advertise(batch, UPDATE_COMMAND)
            sent += len(batch)
    except (htcondor2.HTCondorException, OSError, ValueError, RuntimeError) as err:
        raise PublishError(f"advertising to {where} failed: {err}") from None
    return sent


def invalidate_links(names: Iterable[str], collector: str | None = None, token_dir: str | None = None,
                     my_type: str = "LarkNetworkLink") -> int:
    """Remove link ads by ``Name`` now, instead of waiting for their ClassAdLifetime to run out."""
    import htcondor2

    queries = []
    for name in names:
        q = classad2.ClassAd()
        q["MyType"] = "Query"
        q["TargetType"] = my_type
        q["Name"] = name
        q["Requirements"] = classad2.ExprTree(f"TARGET.Name == {classad2.quote(name)}")
        queries.append(q)
    if not queries:
        return 0
    configure_security(token_dir)
    try:
        coll = htcondor2.Collector(collector) if collector else htcondor2.Collector()
        for batch in _batches(queries, 1000):
            coll.advertise(batch, INVALIDATE_COMMAND)
    except (htcondor2.HTCondorException, OSError, ValueError, RuntimeError) as err:
        raise PublishError(f"invalidating ads at {collector or 'the local collector'} failed: {err}") from None
    return len(queries)
