"""LarkConfig: a node's validated configuration, as one immutable value.

Only the shape lives here, below everything that reads it (the attachment modes, the engine, the
broker): :mod:`lark.config` declares the knobs and builds a LarkConfig from them, and it imports
the mode registry to validate the modes' knobs, so the modes cannot import it in turn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lark.firewall.isolation import HostAllow
from lark.knobs import Setting
from lark.shares import ShareSettings
from lark.values import IPNetwork, SiteAttachment, TrafficClass


@dataclass(frozen=True)
class LarkConfig:
    name_prefix: str
    state_dir: Path
    socket_path: Path
    firewall: str
    network_types: tuple[str, ...]
    default_network_type: str
    nat_ipv4_pool: IPNetwork
    nat_ipv4_subnet_length: int
    nat_ipv6_pool: IPNetwork | None
    nat_ipv6_subnet_length: int
    nat_ipv6_masquerade: bool
    enable_forwarding: bool
    site_attachments: Mapping[str, SiteAttachment]
    traffic_classes: tuple[TrafficClass, ...]
    max_bandwidth_mbit: int
    default_bandwidth_mbit: int
    anti_spoof: bool
    inbound_port_range: tuple[int, int]
    max_inbound_ports: int
    public_address: ipaddress.IPv4Address | None
    deny: tuple[IPNetwork, ...]
    sweep_interval: float
    accounting_interval: float
    log_path: Path
    execute_dir: Path
    starter_path: Path = Path("/usr/sbin/condor_starter")
    request_timeout: float = 5.0
    broker_backlog: int = 256
    broker_workers: int = 8
    broker_max_connections: int = 4096
    journal_path: Path = Path("/var/lib/lark/accounting.jsonl")
    metrics_address: tuple[str, int] | None = None
    metrics_textfile: Path | None = None
    isolate_jobs: bool = True
    job_host_allow: tuple[HostAllow, ...] = ()
    job_to_job_allow: bool | tuple[IPNetwork, ...] = False
    firewall_check_interval: float = 5.0
    addressing_timeout: float = 10.0
    addressing_fallback: str = "hold"
    shares: ShareSettings = ShareSettings()
    settings: Mapping[str, Setting] = field(repr=False, default_factory=dict)
