"""ClassAd attributes: what Lark publishes about a job, and how it reads and shows what a job asked.

Attribute names are CamelCase and ``Lark``-prefixed so ``condor_q -af`` and ``condor_history -af``
read naturally. Per-class counters take the class name in CamelCase: class ``off_campus`` gives
``LarkBytesInOffCampus``.

Reading goes the other way: :func:`job_attributes` turns a job ad into the values
:mod:`lark.policy` judges, and :func:`classad_text` shows any of them back to the user in ClassAd
terms (``undefined``, ``1e+308``, ``{ 1,2 }``), never as a Python repr, because that text ends up
in a HoldReason. Pure functions; values built with classad2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import classad2

from lark.firewall.base import JobCounters
from lark.state import JobRecord
from lark.values import TrafficClass

SETUP_ERROR_ATTR = "LarkSetupError"
SHOWN_CHARS = 40  # longest value a message repeats back; a hold reason stays one readable line


@dataclass(frozen=True)
class Unevaluated:
    """A job attribute whose expression evaluates to undefined or error (``foo.bar``, ``"a" + 1``).

    classad2 evaluates such an attribute to a bare ``Value.Undefined``, which says neither what the
    user wrote nor that it was written at all; this keeps the expression so the message can.
    """

    result: str  # "undefined" or "error"
    expression: str

    def __str__(self) -> str:
        if self.expression.lower() == self.result:
            return self.result
        return f"{_shorten(self.expression)} (which evaluates to {self.result})"


def job_attributes(ad: classad2.ClassAd, prefix: str = "") -> dict[str, object]:
    """Evaluated values of a job ad's attributes whose names start with ``prefix`` (any case).

    An attribute written as the literal ``undefined`` is left out: in ClassAd terms it is not set
    (``condor_qedit ... undefined`` and the broker's chirp use it to clear one). One that merely
    evaluates to undefined or error (a reference to an attribute that does not exist, a type
    error) becomes :class:`Unevaluated`, so the policy refuses it and names what was written.
    """
    out: dict[str, object] = {}
    for key in ad.keys():
        if not key.lower().startswith(prefix.lower()):
            continue
        value = ad.eval(key)
        if isinstance(value, classad2.Value):
            expression = " ".join(str(ad.lookup(key)).split())
            if expression.lower() == "undefined":
                continue
            value = Unevaluated(value.name.lower(), expression)
        out[key] = value
    return out


def classad_text(value: object) -> str:
    """``value`` as a user would write it in a submit file, at most about SHOWN_CHARS characters.

    Numbers keep their short form (``1e+308``, not 309 digits), strings are quoted the ClassAd way,
    undefined and error are the ClassAd keywords.
    """
    if isinstance(value, Unevaluated):
        return str(value)
    if value is None:
        return "undefined"
    if isinstance(value, classad2.Value):  # an IntEnum: tested before int
        return value.name.lower()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _short_int(value)
    if isinstance(value, float):
        return _short_real(value)
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARS:
            return str(classad2.quote(value))
        return f"{str(classad2.quote(value[:SHOWN_CHARS - 8]))[:-1]}...\" ({len(value)} characters)"
    try:  # lists, nested ads, times: classad2 unparses them
        text = " ".join(str(classad2.ClassAd({"v": value}).lookup("v")).split())
    except Exception:  # classad2 raises ValueError/TypeError/ClassAdException for what it cannot hold
        text = f"a {type(value).__name__}"
    return _shorten(text)


def _shorten(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def _short_int(value: int) -> str:
    # ints from an ad fit in 19 digits; a Python caller's may not, and str() of a huge one is slow
    if -10**20 < value < 10**20:
        return str(value)
    exponent = int(math.log10(abs(value)))
    return f"{'-' if value < 0 else ''}{abs(value) // 10 ** (exponent - 5) / 1e5:g}e+{exponent}"


def _short_real(value: float) -> str:
    if math.isnan(value):
        return 'real("NaN")'
    if math.isinf(value):
        return 'real("INF")' if value > 0 else 'real("-INF")'
    text = format(value, ".6g")
    # keep it a real in ClassAd terms: 100.0 is not the whole number 100
    return text if any(c in text for c in ".e") else text + ".0"


def accounting_attributes(counters: JobCounters, classes: Iterable[TrafficClass]) -> dict[str, int | float]:
    attrs: dict[str, int | float] = {
        "LarkBytesIn": counters.bytes_in,
        "LarkBytesOut": counters.bytes_out,
        "LarkPacketsIn": counters.packets_in,
        "LarkPacketsOut": counters.packets_out,
        # HTCondor's own names (the docker universe sets them; MB = 10^6 bytes), so condor_history
        # -af NetworkInputMb, condor_adstash's typed mapping and every existing accounting tool
        # see Lark's figures too
        "NetworkInputMb": counters.bytes_in / 1e6,
        "NetworkOutputMb": counters.bytes_out / 1e6,
    }
    for cls in classes:
        c = counters.classes.get(cls.name)
        attrs[f"LarkBytesIn{cls.attribute_suffix}"] = c.bytes_in if c else 0
        attrs[f"LarkBytesOut{cls.attribute_suffix}"] = c.bytes_out if c else 0
    return attrs


def network_attributes(record: JobRecord) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {"LarkNetworkType": record.mode}
    if record.ipv4_address:
        attrs["LarkIPv4Address"] = record.ipv4_address
    if record.ipv6_address:
        attrs["LarkIPv6Address"] = record.ipv6_address
    if record.ports:
        attrs["LarkPublicAddress"] = record.public_ipv4 or ""
        attrs["LarkPortRange"] = f"{record.ports[0]}-{record.ports[1]}"
    if record.bandwidth_in_mbit or record.bandwidth_out_mbit:
        attrs["LarkBandwidthInLimitMbit"] = record.bandwidth_in_mbit
        attrs["LarkBandwidthOutLimitMbit"] = record.bandwidth_out_mbit
    if record.addressing != "static":
        attrs["LarkAddressing"] = record.addressing
        attrs.update(lease_attributes(record))
    return attrs


def lease_attributes(record: JobRecord) -> dict[str, str | int]:
    """A DHCP job's lease: when it runs out unless renewed (epoch seconds), who granted it, renewals."""
    attrs: dict[str, str | int] = {}
    if record.dhcp_client_id is not None and record.lease_expires is not None:
        attrs["LarkLeaseExpires"] = int(record.lease_expires)
        attrs["LarkLeaseServer"] = record.lease_server or ""
        attrs["LarkLeaseRenewals"] = record.lease_renewals
    return attrs


def expressions(attrs: Mapping[str, object]) -> dict[str, str]:
    """Attribute values as ClassAd expression text (what chirp's set_job_attr takes)."""
    import classad2

    ad = classad2.ClassAd(dict(attrs))
    return {name: str(ad.lookup(name)) for name in attrs}
