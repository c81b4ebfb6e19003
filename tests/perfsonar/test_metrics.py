"""The spider's crawl counters, read back with prometheus-client's own parser."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from perfsonar.crawl import CrawlStats
from perfsonar.metrics import SpiderMetrics
from tests.support import wait_until


def samples(m: SpiderMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(m.exposition().decode()) for s in f.samples}


def test_counters_add_up_over_crawls_and_gauges_describe_the_last() -> None:
    m = SpiderMetrics()
    first = CrawlStats(number=1, duration=12.5, archives=5, archives_failed=1, archives_partial=1, requests=40,
                       retried=2, samples=900, rejected=3, grades=Counter(good=7, stale=2), carried=1, unmapped=4,
                       mesh_missing=6)
    m.observe(first, finished=1_800_000_000)
    m.observe(CrawlStats(number=2, duration=3.0, archives=5, requests=10, samples=100,
                         grades=Counter(good=9)), finished=1_800_000_600)
    s = samples(m)
    assert s[("lark_spider_crawls_total", ())] == 2
    assert s[("lark_spider_http_requests_total", ())] == 50
    assert s[("lark_spider_samples_total", ())] == 1000
    assert s[("lark_spider_last_crawl_seconds", ())] == 3.0
    assert s[("lark_spider_last_crawl_timestamp_seconds", ())] == 1_800_000_600
    assert s[("lark_spider_links", (("grade", "good"),))] == 9
    assert s[("lark_spider_links", (("grade", "stale"),))] == 0  # the last crawl's, not a sum
    assert s[("lark_spider_archives", (("outcome", "ok"),))] == 5
    assert s[("lark_spider_unmapped_hosts", ())] == 0


def test_the_daemon_writes_its_crawl_counters_for_node_exporter(server, now, tmp_path) -> None:
    """The real lark-spider daemon against the loopback fake, LARK_SPIDER_METRICS_TEXTFILE set: after
    its first crawl the file holds the crawl, parsed by prometheus-client's own parser."""
    import subprocess

    from tests.perfsonar.test_real_meshes import EXE, MetaWorld, spider_env

    world = MetaWorld(server, now)
    textfile = tmp_path / "lark-spider.prom"
    (tmp_path / "spider.yaml").write_text("sites:\n  resolve_dns: false\n")
    args = [str(EXE), "-c", str(tmp_path / "spider.yaml"), "--psconfig", world.publisher,
            "--log", str(tmp_path / "spider.log")]
    env = spider_env(tmp_path, LARK_SPIDER_COLLECTOR="127.0.0.1:9", LARK_SPIDER_METRICS_TEXTFILE=str(textfile))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def written() -> bool:
            assert proc.poll() is None, (tmp_path / "spider.log").read_text()  # the spider died
            return textfile.exists()

        wait_until(f"the spider to write {textfile}", written, 60, 0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    s = {(x.name, tuple(sorted(x.labels.items()))): x.value
         for f in text_string_to_metric_families(textfile.read_text()) for x in f.samples}
    assert s[("lark_spider_crawls_total", ())] == 1
    assert s[("lark_spider_links", (("grade", "good"),))] > 0  # the fake's measured pairs
    assert s[("lark_spider_http_requests_total", ())] > 0
