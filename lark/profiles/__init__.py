"""Network profiles: admin-written YAML bundles a job selects with ``LarkNetworkProfile = "name"``.

A profile names everything a data-transfer job needs from the node in one place: the attachment
mode and its parent interface, the address pools, a block of inbound ports and the environment
variables movers read it from (``GLOBUS_TCP_PORT_RANGE``, ``HPSS_PORT_RANGE``), a bandwidth share,
allowed and denied destinations, a CPU affinity hint, extra environment, and who may use it.

Profiles live in ``LARK_PROFILE_DIR`` (``*.yaml``/``*.yml``, one or more profiles per file under a
top-level ``profiles:`` mapping). They are validated once, when loaded, and strictly: unlike Janus,
whose pydantic models silently ignore stale keys, an unknown key is an error. Every error names
the file, the line, the profile, the key and what is accepted. A profile with an error is not
offered (a job asking for it is told so); the other profiles of the node still are.

One concern per module, and this package's public names are the ones below:

- :mod:`~lark.profiles.model`: the keys, :class:`Profile` and :class:`ProfileError`;
- :mod:`~lark.profiles.values`: the small values (CPU lists, environment names, port templates);
- :mod:`~lark.profiles.parsing`: one file's text -> profiles and errors;
- :mod:`~lark.profiles.catalogue`: a directory -> the :class:`Catalog` a node offers;
- :mod:`~lark.profiles.placement`: the ``cpus`` hint resolved from sysfs;
- :mod:`~lark.profiles.jobs`: a job that names a profile (the request itself is read by
  :func:`lark.policy.request_within` within :meth:`Profile.request_limits`).

Everything is pure (text in, frozen dataclasses out) except the readers of the profile directory,
of sysfs (:func:`resolve_cpus`) and of the user database (:func:`user_and_groups`).
"""

from lark.policy import ATTR_PROFILE
from lark.profiles.catalogue import (
    Catalog,
    CatalogCache,
    build_catalog,
    load_profiles,
    node_advertisement,
    profile_dir,
    profile_files,
)
from lark.profiles.jobs import (
    JobExtras,
    ResolvedRequest,
    authorize,
    profile_name,
    request_for_job,
    resolve_request,
    user_and_groups,
)
from lark.profiles.model import (
    ACCEPTED,
    ADVERTISED_ATTR,
    DEFAULT_PROFILE_DIR,
    KEYS,
    MAX_FILE_BYTES,
    MAX_NESTING,
    MAX_PROFILES,
    MAX_VALUES,
    PROFILE_DIR_KNOB,
    CpuHint,
    PortRangeVariable,
    Profile,
    ProfileError,
    format_pool,
)
from lark.profiles.placement import CpuPlacement, numa_node, resolve_cpus
from lark.profiles.values import format_cpulist, parse_cpulist

__all__ = [
    "ACCEPTED", "ADVERTISED_ATTR", "ATTR_PROFILE", "DEFAULT_PROFILE_DIR", "KEYS", "MAX_FILE_BYTES", "MAX_NESTING",
    "MAX_PROFILES", "MAX_VALUES", "PROFILE_DIR_KNOB",
    "Catalog", "CatalogCache", "CpuHint", "CpuPlacement", "JobExtras", "PortRangeVariable", "Profile", "ProfileError",
    "ResolvedRequest",
    "authorize", "build_catalog", "format_cpulist", "format_pool", "load_profiles", "node_advertisement", "numa_node",
    "parse_cpulist", "parse_profiles", "profile_dir", "profile_files", "profile_name", "request_for_job",
    "resolve_cpus", "resolve_request", "user_and_groups",
]


def __getattr__(name: str) -> object:
    # parse_profiles needs PyYAML: imported when asked for, so that the PREPARE_JOB hook of a job
    # without a profile (which imports this package for every job) does not pay for it
    if name == "parse_profiles":
        from lark.profiles.parsing import parse_profiles

        return parse_profiles
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
