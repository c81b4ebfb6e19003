"""Test support shared by the test suites and the benchmarks (like CNI's ``pkg/testutils``).

* :func:`wait_until` - poll a condition; the timeout error names what was awaited.
* :func:`wire_count`, :func:`same_bytes` - the nft wire counter byte accounting is checked against.
* :func:`iperf3_json`, :func:`received_mbit` - one reader of iperf3's ``-J`` report.
* :func:`in_ns`, :func:`wait_listening` - commands in a test's namespace, waiting for a listener.
* :func:`links_left` - a job's host links after the kernel's asynchronous cleanup.
* :class:`tests.support.dnsmasq.Dnsmasq` - a real DHCP server and router advertiser on a test segment.
"""

from tests.support.iperf3 import iperf3_json, received_mbit
from tests.support.links import links_left
from tests.support.netns import in_ns, wait_listening
from tests.support.waiting import wait_until
from tests.support.wire import same_bytes, wire_count

__all__ = ["in_ns", "iperf3_json", "links_left", "received_mbit", "same_bytes", "wait_listening",
           "wait_until", "wire_count"]
