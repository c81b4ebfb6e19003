"""Unit conversions and plausibility checks (pure functions)."""

from __future__ import annotations

import pytest

from perfsonar.model import M_LOSS, M_OWDELAY, M_RTT, M_THROUGHPUT
from perfsonar.normalise import (
    canonical_ip,
    histogram_median,
    ip_family,
    owd_scale,
    parse_archive_time,
    parse_iso_duration,
    parse_seconds,
    percentile,
    plausible,
    plausible_time,
    to_float,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT4H", 14400.0), ("PT10M", 600.0), ("PT0.0342S", 0.0342), ("P1DT2H", 93600.0), ("P1W", 604800.0),
    ("pt30s", 30.0),
])
def test_iso_durations(text: str, seconds: float) -> None:
    assert parse_iso_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["P", "PT", "P1Y", "4h", "", None, 12])
def test_iso_duration_rejects_non_durations(text: object) -> None:
    assert parse_iso_duration(text) is None


def test_seconds_accept_numbers_strings_and_iso() -> None:
    assert parse_seconds(14400.0) == 14400.0
    assert parse_seconds("30") == 30.0
    assert parse_seconds("PT1M") == 60.0
    assert parse_seconds("soon") is None


def test_timestamps_are_utc_epoch_seconds_whatever_the_offset() -> None:
    utc = parse_archive_time("2025-05-02T10:00:03+00:00")
    assert utc == 1746180003.0
    # pscheduler.start_time carries the measuring host's offset: same instant, other wall clock.
    assert parse_archive_time("2025-05-02T12:00:03+02:00") == utc
    assert parse_archive_time("2025-05-02T05:00:03-05:00") == utc
    assert parse_archive_time("2025-05-02T10:00:03Z") == utc
    assert parse_archive_time("2025-05-02T10:00:03") == utc  # no offset: taken as UTC
    assert parse_archive_time(1746180003) == utc
    assert parse_archive_time("1746180003") == utc  # esmond strings
    assert parse_archive_time(1746180003000) == utc  # epoch milliseconds (OpenSearch sort values)
    assert parse_archive_time("yesterday") is None
    assert parse_archive_time(None) is None


def test_to_float_coerces_esmond_strings_and_refuses_garbage() -> None:
    assert to_float("34.4") == 34.4
    assert to_float(3) == 3.0
    for bad in (None, True, "NaN", "inf", "x", [1], {"a": 1}):
        assert to_float(bad) is None


def test_histogram_median_weighs_buckets_and_rescales() -> None:
    hist = {"34.41": 212, "34.42": 301, "34.43": 80, "34.47": 7}
    assert histogram_median(hist) == pytest.approx(34.42)
    # Bucket width 0.0001 s: keys are tenths of a millisecond -> scale 0.1 gives ms.
    assert histogram_median({"344.1": 10, "344.2": 30}, 0.1) == pytest.approx(34.42)
    assert histogram_median({"1": 1, "3": 1}) == pytest.approx(2.0)  # even split: midpoint
    assert histogram_median({}) is None
    assert histogram_median({"a": 1}) is None
    assert histogram_median({"1": -5}) is None


def test_owd_scale_only_rescales_pscheduler_data() -> None:
    assert owd_scale("pscheduler/powstream", 0.001) == pytest.approx(1.0)
    assert owd_scale("pscheduler/powstream", "0.0001") == pytest.approx(0.1)
    assert owd_scale("pscheduler/owping", 0.01) == pytest.approx(10.0)
    assert owd_scale(None, 0.0001) == pytest.approx(0.1)  # OpenSearch: always pScheduler data
    # Pre-pScheduler esmond data advertises 0.0001 but its buckets are already ms (reference P10).
    assert owd_scale("powstream", "0.0001") == 1.0
    assert owd_scale("pscheduler/powstream", None) == 1.0


def test_bounds_reject_wrong_units_and_garbage() -> None:
    assert plausible(M_THROUGHPUT, 9.4e9) == 9.4e9
    assert plausible(M_THROUGHPUT, -1.0) is None
    assert plausible(M_THROUGHPUT, 9.4e15) is None  # bytes*1000 or a corrupted value
    assert plausible(M_LOSS, 0.5) == 0.5
    assert plausible(M_LOSS, 2.5) is None  # a percentage where a fraction belongs
    assert plausible(M_OWDELAY, -0.3) is None  # clock error
    assert plausible(M_RTT, 34.2) == 34.2
    assert plausible(M_RTT, float("nan")) is None
    assert plausible(M_RTT, None) is None


def test_plausible_time_window() -> None:
    assert plausible_time(1000.0, now=2000.0, oldest=500.0) == 1000.0
    assert plausible_time(400.0, now=2000.0, oldest=500.0) is None
    assert plausible_time(2000.0 + 3600, now=2000.0, oldest=500.0) is None  # from the future


def test_ip_canonical_forms_compare_equal() -> None:
    assert canonical_ip("2001:0db8:0000:0000:0000:0000:0000:0041") == "2001:db8::41"
    assert canonical_ip("[2001:db8::41]") == "2001:db8::41"
    assert canonical_ip("fe80::1%eth0") == "fe80::1"
    assert canonical_ip("ps.example.org") is None
    # An IPv4-mapped IPv6 address is the IPv4 host (the same site, the same sites.rules cidr).
    assert canonical_ip("::ffff:10.1.0.10") == canonical_ip("::FFFF:0a01:000a") == "10.1.0.10"
    assert canonical_ip("::10.1.0.10") == "::a01:a"  # IPv4-compatible (deprecated) is not mapped
    assert ip_family("192.0.2.1") == 4
    assert ip_family("2001:db8::1") == 6
    assert ip_family("host") is None


def test_percentile_interpolates() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == 1.75
    assert percentile([7.0], 75) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
