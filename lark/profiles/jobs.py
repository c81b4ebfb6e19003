"""A job that names a profile: which profile, may its user use it, and what the job gets.

:func:`request_for_job` is the one call for the prepare hook and the broker. The request itself is
read by :func:`lark.policy.request_within` within the profile's limits
(:meth:`~lark.profiles.model.Profile.request_limits`), the same reading as a job without a
profile; this module adds what only a profile gives: its site pools, environment and CPU placement.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lark.config import LarkConfig, SiteAttachment
from lark.errors import RequestError
from lark.policy import ATTR_PROFILE, JobRequest, request_from_attributes, request_within, string_attr
from lark.profiles.catalogue import Catalog
from lark.profiles.model import PortRangeVariable, Profile
from lark.profiles.placement import resolve_cpus
from lark.profiles.values import format_cpulist


def profile_name(attrs: Mapping[str, object], offered: Callable[[], str]) -> str | None:
    """The profile a job names, None when it names none; anything but a non-empty string is refused.

    ``offered()`` lists the node's profiles for the refusal. It is only called when the job names
    a profile (which needs the catalogue anyway): a job without one never makes the node read its
    profile directory.
    """
    if attrs.get(ATTR_PROFILE) is None:
        return None
    accepted = f"write the name of a profile this node offers ({offered()}), or leave the attribute out for none"
    return string_attr(attrs, ATTR_PROFILE, "a profile name", accepted)


def authorize(profile: Profile, user: str, groups: Iterable[str]) -> None:
    """Raise RequestError unless ``user`` (or one of ``groups``) may use ``profile``."""
    if not profile.users and not profile.groups:
        return
    if user in profile.users or not set(groups).isdisjoint(profile.groups):
        return
    allowed = "; ".join(part for part in (
        f"users {', '.join(profile.users)}" if profile.users else "",
        f"members of {', '.join(profile.groups)}" if profile.groups else "") if part)
    raise RequestError(ATTR_PROFILE, f"user {user!r} may not use profile {profile.name!r} (allowed: {allowed}); "
                                     "ask the node's admin for access or choose another profile")


def user_and_groups(uid: int) -> tuple[str, tuple[str, ...]]:
    """The user name and group names of ``uid`` from the user database (for :func:`authorize`)."""
    import grp
    import pwd

    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return str(uid), ()
    names = []
    for gid in os.getgrouplist(pw.pw_name, pw.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return pw.pw_name, tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class JobExtras:
    """What a profile adds beyond the engine's JobRequest: environment and CPU placement for the wrapper."""

    profile: str
    environment: tuple[tuple[str, str], ...] = ()
    port_range_env: tuple[PortRangeVariable, ...] = ()
    cpus: tuple[int, ...] | None = None

    def job_environment(self, ports: tuple[int, int] | None, public_address: str | None) -> dict[str, str]:
        """Variables to export next to the engine's LARK_* ones, once the port range is known."""
        env = {"LARK_NETWORK_PROFILE": self.profile}
        if self.cpus:
            env["LARK_CPUS"] = format_cpulist(self.cpus)
        env.update(self.environment)
        if ports:
            for var in self.port_range_env:
                env[var.name] = var.render(ports[0], ports[1], public_address)
        return env


@dataclass(frozen=True)
class ResolvedRequest:
    """A job's request with its profile applied: what the engine does, and what the wrapper exports."""

    request: JobRequest
    site: SiteAttachment | None = None  # the profile's parent and pools (bridge, macvlan, ipvlan)
    extras: JobExtras | None = None  # None: the job asked for no profile


def resolve_request(attrs: Mapping[str, object], profile: Profile, job_id: str,
                    sysfs: Path = Path("/sys")) -> ResolvedRequest:
    """Apply ``profile`` to a job's attributes. The profile is the ceiling; the job may only narrow it.

    The profile sets the mode (a different ``LarkNetworkType`` is refused). The job may ask for a
    lower bandwidth, fewer inbound ports, a narrower ``LarkAllow`` (inside the profile's allow
    list) and more ``LarkDeny``; asking for more than the profile gives is refused with the
    profile's value (:func:`lark.policy.request_within` reads the request).
    """
    request = request_within(attrs, profile.request_limits(), job_id)
    extras = JobExtras(profile.name, profile.environment, profile.port_range_env if request.inbound_ports else (),
                       resolve_cpus(profile, sysfs).cpus)
    return ResolvedRequest(request, profile.site, extras)


def request_for_job(attrs: Mapping[str, object], catalog: Callable[[], Catalog], config: LarkConfig, job_id: str,
                    who: Callable[[], tuple[str, Iterable[str]]], sysfs: Path = Path("/sys")) -> ResolvedRequest:
    """The one call for the prepare hook and the broker: a job with or without ``LarkNetworkProfile``.

    On every job's start path, so the catalogue (``catalog()``) and the user database (``who()``:
    user name and groups) are only consulted when the job names a profile, and the user database
    only when that profile restricts its users."""
    loaded: list[Catalog] = []  # read once, and only for a job that names a profile

    def offered() -> Catalog:
        if not loaded:
            loaded.append(catalog())
        return loaded[0]

    name = profile_name(attrs, lambda: ", ".join(offered().names) or "none")
    if name is None:
        return ResolvedRequest(request_from_attributes(attrs, config, job_id))
    profile = offered().select(name)
    if profile.users or profile.groups:
        authorize(profile, *who())
    return resolve_request(attrs, profile, job_id, sysfs)
