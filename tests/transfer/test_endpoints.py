"""The endpoints file: what it accepts, and every error naming file, line, endpoint and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lark.errors import ConfigError
from lark.transfer.endpoints import check_path, load_endpoints, parse_endpoints

GOOD = """\
endpoints:
  fnal-gridftp:
    description: FNAL DTN
    protocol: gridftp
    url: ftp://127.0.0.1:2811/data
    site: FNAL
    profile: nat-callback
    groups: [cms]
  web:
    protocol: https
    url: https://data.example.org/store/
    site: UCSD
    users: [alice, bob]
    container_image: /cvmfs/images/xfer.sif
"""


def test_good_file_gives_every_endpoint_with_its_settings() -> None:
    endpoints, errors = parse_endpoints(GOOD, "ep.yaml")
    assert errors == []
    by_name = {e.name: e for e in endpoints}
    ftp = by_name["fnal-gridftp"]
    assert (ftp.protocol, ftp.site, ftp.profile, ftp.groups) == ("gridftp", "FNAL", "nat-callback", ("cms",))
    assert ftp.line == 3  # where its settings start
    assert ftp.url == "ftp://127.0.0.1:2811/data/"  # a base URL always ends with /
    assert ftp.url_for("run1/a.dat") == "ftp://127.0.0.1:2811/data/run1/a.dat"
    web = by_name["web"]
    assert web.as_dict()["universe"] == "container" and web.profile is None
    assert web.may_use("alice", []) and not web.may_use("carol", ["cms"])
    assert ftp.may_use("carol", ["cms"]) and not ftp.may_use("carol", ["atlas"])


def test_every_error_names_line_endpoint_and_key() -> None:
    text = """\
endpoints:
  a:
    protocol: gridftp
    url: https://x.example/
    site: S
    bandwith: 3
  b:
    protocol: s3
    url: s3://bucket/
  c:
    protocol: xrootd
    url: root://x.example//
    site: "bad site"
    users: alice
"""
    endpoints, errors = parse_endpoints(text, "ep.yaml")
    assert endpoints == []
    messages = [str(e) for e in errors]
    assert any(m.startswith("ep.yaml:4: endpoint 'a': key 'url' ") and "scheme 'https'" in m for m in messages)
    assert any(m.startswith("ep.yaml:6: endpoint 'a': key 'bandwith' is not known") for m in messages)
    assert any(m.startswith("ep.yaml:8: endpoint 'b': key 'protocol' 's3' is not one of") for m in messages)
    assert any("endpoint 'b': key 'site' is required" in m for m in messages)
    assert any(m.startswith("ep.yaml:13: endpoint 'c': key 'site'") for m in messages)
    assert any(m.startswith("ep.yaml:14: endpoint 'c': key 'users' must be a list") for m in messages)
    assert len(errors) == 6


def test_one_bad_endpoint_leaves_the_others_offered() -> None:
    endpoints, errors = parse_endpoints(GOOD + "  broken:\n    protocol: https\n", "ep.yaml")
    assert sorted(e.name for e in endpoints) == ["fnal-gridftp", "web"]
    assert [e.endpoint for e in errors] == ["broken", "broken"]  # url and site missing


def test_an_xrootd_url_needs_an_absolute_path_after_the_host() -> None:
    """xrootd servers refuse relative paths, and root://host/data/ names the relative path data/: the
    error shows the URL to write instead."""
    text = "endpoints:\n  x:\n    protocol: xrootd\n    url: root://dtn.example:1094/data/\n    site: S\n"
    endpoints, errors = parse_endpoints(text, "ep.yaml")
    assert endpoints == []
    [error] = errors
    assert str(error).startswith("ep.yaml:4: endpoint 'x': key 'url' 'root://dtn.example:1094/data/' has a relative")
    assert "write e.g. root://dtn.example:1094//data/" in str(error)
    endpoints, errors = parse_endpoints(text.replace(":1094/data/", ":1094//data"), "ep.yaml")
    assert errors == [] and endpoints[0].url_for("/run1/f.root") == "root://dtn.example:1094//data/run1/f.root"
    # the export root itself
    assert parse_endpoints(text.replace(":1094/data/", ":1094//"), "ep.yaml")[1] == []


@pytest.mark.parametrize("text", ["endpoints: [a]\n", "profiles: {}\n", "endpoints: {a: [1]}\n", "a: [\n"])
def test_wrong_shapes_are_refused_with_a_line(text: str) -> None:
    endpoints, errors = parse_endpoints(text, "ep.yaml")
    assert endpoints == [] and errors and str(errors[0]).startswith("ep.yaml:")


def test_bounded_reader_refuses_alias_bombs() -> None:
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(6))
    endpoints, errors = parse_endpoints(bomb, "ep.yaml")
    assert endpoints == [] and "more than 50000 values" in str(errors[0])


def test_load_endpoints_reports_every_error_or_missing_file(tmp_path: Path) -> None:
    good = tmp_path / "ep.yaml"
    good.write_text(GOOD)
    assert sorted(load_endpoints(good)) == ["fnal-gridftp", "web"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD + "  x:\n    protocol: https\n")
    with pytest.raises(ConfigError, match="2 error"):
        load_endpoints(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_endpoints(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", ["", " a", "a/../b", "..", "a?x=1", "a#b", "a\nb"])
def test_paths_that_leave_the_base_url_or_are_odd_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        check_path(path)


def test_paths_are_relative_to_the_base_url() -> None:
    assert check_path("/run1/a..b.dat") == "run1/a..b.dat"
