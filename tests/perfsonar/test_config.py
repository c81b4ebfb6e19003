"""Loading and validating the spider's YAML configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsonar.config import config_path, load_spider_config, parse_duration
from perfsonar.errors import ConfigError
from perfsonar.model import LATENCY, THROUGHPUT

FULL = """\
spider:
  interval: 10m
  state_file: {tmp}/state.json
  concurrency: 8
http:
  timeout: 5
  retries: 1
discovery:
  publishers: [https://psconfig.example.org/pub/config]
  meshes:
    - https://psconfig.example.org/pub/config/extra
    - {{url: https://old.example.org/mesh.json, format: meshconfig}}
  derive_opensearch: true
  lookup_service: {{enabled: true, communities: [OSG]}}
archives:
  prefer: [esmond, opensearch]
  endpoints:
    - {{url: https://psarch.example.org/opensearch, type: opensearch, verify_tls: false}}
    - {{url: https://psarch.example.org/esmond/perfsonar/archive, type: esmond}}
measurements:
  tests: [throughput, latency]
  windows: {{latency: PT30M}}
quality:
  max_loss: 0.01
  default_intervals: {{throughput: 4h}}
sites:
  rules:
    - {{site: UNL, cidrs: [129.93.0.0/16, "2600:900::/28"], hosts: ["*.unl.edu"]}}
  registries:
    - {{type: osg-topology, path: topo, site_name: wlcg}}
  hosts:
    ps.example.org: [192.0.2.1, "2001:db8::1"]
collector:
  address: cm.example.org:9618
  token_dir: /etc/condor/tokens.d
  ad_lifetime: 1800
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "topo").mkdir(exist_ok=True)
    path = tmp_path / "spider.yaml"
    path.write_text(text.format(tmp=tmp_path))
    return path


def test_full_config(tmp_path: Path) -> None:
    cfg = load_spider_config(write(tmp_path, FULL), knobs=None)
    assert cfg.interval == 600.0 and cfg.concurrency == 8
    assert cfg.state_file == tmp_path / "state.json"
    assert cfg.http.timeout == 5.0 and cfg.http.retries == 1
    assert [m.format for m in cfg.meshes] == ["auto", "meshconfig"]
    assert cfg.lookup.enabled and cfg.lookup.communities == ("OSG",)
    assert cfg.archive_preference == ("esmond", "opensearch")
    assert cfg.archives[0].verify_tls is False and cfg.archives[1].url.endswith("/archive/")
    assert cfg.read.tests == (THROUGHPUT, LATENCY) and cfg.read.windows[LATENCY] == 1800.0
    assert cfg.quality.max_loss == 0.01 and cfg.quality.default_intervals[THROUGHPUT] == 14400.0
    assert cfg.site_rules[0].site == "UNL" and len(cfg.site_rules[0].networks) == 2
    assert cfg.registries[0].path == tmp_path / "topo" and cfg.registries[0].site_key == "wlcg"
    assert cfg.static_hosts["ps.example.org"] == ("192.0.2.1", "2001:db8::1")
    assert cfg.collector.address == "cm.example.org:9618" and cfg.ad_lifetime == 1800


@pytest.mark.parametrize(("old", "new", "knob", "marker", "accepted"), [
    ("max_loss: 0.01", "max_loss: two", "quality.max_loss", "two", "between 0 and 1"),
    ("prefer: [esmond, opensearch]", "prefer: [esmond, elastic]", "archives.prefer[1]", "elastic",
     "esmond, opensearch"),
    ("  retries: 1", "  retries: 1\n  retry: 3", "http.retry", "retry:", "accepted: timeout"),
    ("interval: 10m", "interval: soon", "spider.interval", "soon", "'4h'"),
    ("site: UNL, cidrs: [129.93.0.0/16", "site: UNL, cidrs: [129.93.0.0/33", "sites.rules[0].cidrs[0]", "/33",
     "CIDR"),
    ("path: topo,", "path: nowhere,", "sites.registries[0].path", "nowhere", "no such file"),
    ("type: opensearch, verify", "type: kafka, verify", "archives.endpoints[0].type", "kafka", "esmond, opensearch"),
    ("tests: [throughput, latency]", "tests: [throughput, owamp]", "measurements.tests[1]", "owamp", "latency"),
])
def test_errors_name_file_line_key_and_accepted_values(tmp_path: Path, old: str, new: str, knob: str, marker: str,
                                                       accepted: str) -> None:
    assert old in FULL
    text = FULL.replace(old, new)
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if marker in t)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spider_config(path, knobs=None)
    err = info.value
    assert err.knob == knob and err.source == str(path) and err.line == line
    assert accepted in str(err) and str(err).startswith(f"{path}:{line}: {knob}:")


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("spider:\n  interval: [600\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_spider_config(path, knobs=None)
    assert info.value.line is not None


def test_the_file_is_read_within_bounds(tmp_path: Path) -> None:
    """The spider's file goes through the same bounded reader as profiles: refusals name file and line."""
    path = tmp_path / "spider.yaml"
    # each line repeats the one before ten times: line 6 stands for 1 111 111 values
    levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 6))
    path.write_text("l0: &l0 [x, y, z, w, v, u, t, s, r, q]\n" + levels)
    with pytest.raises(ConfigError) as info:
        load_spider_config(path, knobs=None)
    assert str(info.value) == (f"{path}:6: holds more than 500000 values, counting what aliases (*name) and merge "
                               "keys (<<) repeat; the spider's configuration needs a few hundred")
    path.write_text("spider:\n  interval: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match="^" + str(path) + ":2: is not valid YAML: collections are nested more "
                                          r"than 20 levels deep \(the spider's configuration needs 6\)$"):
        load_spider_config(path, knobs=None)
    path.write_bytes(b"spider:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot be read: 'utf-8' codec"):
        load_spider_config(path, knobs=None)
    with path.open("w") as f:
        f.write("# padding\n" * (1 << 19))  # 5 MiB of comments
    with pytest.raises(ConfigError, match=r"is 5242880 bytes \(5.0 MiB\), more than the 4194304 bytes \(4 MiB\)"):
        load_spider_config(path, knobs=None)


def test_lookup_service_alone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ls.yaml"
    path.write_text("discovery:\n  lookup_service: {enabled: true}\n")
    with pytest.raises(ConfigError, match="Lookup Service alone"):
        load_spider_config(path, knobs=None)


def test_knobs_override_the_yaml(tmp_path: Path) -> None:
    knobs = {"LARK_SPIDER_INTERVAL": "120", "LARK_SPIDER_COLLECTOR": "127.0.0.1:9618",
             "LARK_SPIDER_TOKEN_DIR": "/tmp/tokens"}
    cfg = load_spider_config(write(tmp_path, FULL), knobs=knobs.get)
    assert cfg.interval == 120.0 and cfg.collector.address == "127.0.0.1:9618"
    assert cfg.collector.token_dir == "/tmp/tokens"
    assert config_path(None, {"LARK_SPIDER_CONFIG": "/etc/x.yaml"}.get) == Path("/etc/x.yaml")
    assert config_path("/a.yaml", {"LARK_SPIDER_CONFIG": "/etc/x.yaml"}.get) == Path("/a.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_spider_config(tmp_path / "none.yaml", knobs=None)


def test_durations() -> None:
    assert [parse_duration(v) for v in (600, "600", "10m", "4h", "1d", "PT4H", "90s")] == [
        600, 600, 600, 14400, 86400, 14400, 90]
    assert parse_duration("soon") is None and parse_duration(True) is None
