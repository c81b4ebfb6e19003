"""The ``LARK_*`` environment a job sees, built from its record (one place for the broker and ``lark run``).

The HTCondor wrapper exports what the broker replies (:func:`job_environment` plus the profile's
extra variables recorded at set-up); ``lark run`` exports the same set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lark.state import JobRecord


def job_environment(record: JobRecord) -> dict[str, str]:
    """The ``LARK_*`` variables of a job: its mode, token, addresses and inbound ports."""
    env = {"LARK_NETWORK_TYPE": record.mode, "LARK_JOB_TOKEN": record.token}
    for name, value in (("LARK_IPV4_ADDRESS", record.ipv4_address), ("LARK_IPV6_ADDRESS", record.ipv6_address),
                        ("LARK_HOST_IPV4_ADDRESS", record.host_ipv4_address),
                        ("LARK_HOST_IPV6_ADDRESS", record.host_ipv6_address)):
        if value:
            env[name] = value
    if record.ports:
        env["LARK_PORT_RANGE"] = f"{record.ports[0]}-{record.ports[1]}"
        env["LARK_PUBLIC_ADDRESS"] = record.public_ipv4 or ""
    return env


def wrapper_environment(record: JobRecord) -> dict[str, str]:
    """What the wrapper adds to the job's environment: Lark's variables, then the profile's."""
    return {**job_environment(record), **record.profile_env}
