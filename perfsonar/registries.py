"""Site registries: which grid site each perfSONAR host belongs to, from the registries' own exports.

Supported exports (each read from a file, a directory or a URL):

* **OSG Topology** — the YAML tree of ``opensciencegrid/topology``
  (``topology/<Facility>/<Site>/<ResourceGroup>.yaml``), one resource-group file, or the
  ``https://topology.opensciencegrid.org/rgsummary/xml`` summary: resources with a
  ``net.perfSONAR.Bandwidth``/``Latency`` service (``Details.endpoint``, else the resource ``FQDN``).
* **GOCDB** — ``get_service_endpoint`` XML as the GOCDB programmatic interface serves it
  (``SERVICE_ENDPOINT`` with ``HOSTNAME``, ``SERVICE_TYPE``, ``SITENAME``, ``IN_PRODUCTION``), or the same
  records as JSON.
* **CRIC** (and its predecessor AGIS) — ``/api/core/service/query/?json&type=PerfSonar``: an object
  keyed by service name (CRIC) or a list (AGIS) of records with ``endpoint``, ``rcsite``/``rc_site``,
  ``flavour``, ``state``.

Parsing is pure (text in, entries out); only :func:`load_registry` reads files.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lark.yamlfile import YamlFileError, YamlLimits, load, read_text
from perfsonar.errors import RegistryError

PERFSONAR_SERVICE_TYPES = ("net.perfSONAR.Bandwidth", "net.perfSONAR.Latency")
REGISTRY_TYPES = ("osg-topology", "gocdb", "cric")
OSG_SITE_KEYS = ("resource_group", "site", "wlcg")
# One OSG Topology resource-group file is a few kB (the largest a few hundred values); the bounds
# keep a wrong file (or a hostile download) from stalling the crawl.
OSG_YAML_LIMITS = YamlLimits(what="an OSG Topology resource-group file", max_bytes=8 << 20, max_nesting=20,
                             max_values=500_000, usual_nesting=6, usual_values="a few hundred")


@dataclass(frozen=True)
class RegistryEntry:
    """A perfSONAR host a registry assigns to a site."""

    site: str
    host: str
    source: str
    flavour: str | None = None


# --------------------------------------------------------------------------------------------
# Registry parsers (pure)


def parse_osg_resource_group(doc: Any, source: str, resource_group: str, site_dir: str | None = None,
                             site_key: str = "resource_group") -> list[RegistryEntry]:
    """perfSONAR hosts of one OSG Topology resource-group YAML document.

    The site is the resource group (the file name, as OSG's own XML calls it ``GroupName``), the
    site directory, or the WLCG accounting name of the group's resources (``site_key``). Inactive
    resources (``Active: false``) are skipped, and so are resources and whole groups with
    ``Disable: true`` (Topology's legacy flag that means deleted). A perfSONAR service's
    ``Details.endpoint`` wins over the resource FQDN.
    """
    if not isinstance(doc, Mapping):
        raise RegistryError(f"{source}: not an OSG Topology resource group (expected a mapping)")
    if doc.get("Disable") is True:
        return []
    resources = doc.get("Resources")
    if not isinstance(resources, Mapping):
        return []
    wlcg_names = [r.get("WLCGInformation", {}).get("AccountingName") for r in resources.values()
                  if isinstance(r, Mapping) and isinstance(r.get("WLCGInformation"), Mapping)]
    wlcg = next((n for n in wlcg_names if isinstance(n, str) and n), None)
    if site_key == "site":
        site = site_dir or resource_group
    elif site_key == "wlcg":
        site = wlcg or resource_group
    else:
        site = resource_group
    out: list[RegistryEntry] = []
    for res in resources.values():
        if not isinstance(res, Mapping) or res.get("Active") is False or res.get("Disable") is True:
            continue
        services = res.get("Services")
        if not isinstance(services, Mapping):
            continue
        for stype, svc in services.items():
            if stype not in PERFSONAR_SERVICE_TYPES:
                continue
            details = svc.get("Details") if isinstance(svc, Mapping) else None
            endpoint = details.get("endpoint") if isinstance(details, Mapping) else None
            host = endpoint if isinstance(endpoint, str) and endpoint else res.get("FQDN")
            if isinstance(host, str) and host:
                out.append(RegistryEntry(site, host_only(host), source, stype))
    return out


def parse_gocdb(text: str, source: str) -> list[RegistryEntry]:
    """perfSONAR endpoints from GOCDB ``get_service_endpoint`` output (XML, or the same as JSON)."""
    records: list[Mapping[str, Any]] = []
    stripped = text.lstrip()
    if stripped.startswith("<"):
        try:
            root = ET.fromstring(text)
        except ET.ParseError as err:
            raise RegistryError(f"{source}: not valid GOCDB XML: {err}") from None
        for ep in root.iter("SERVICE_ENDPOINT"):
            records.append({child.tag: (child.text or "").strip() for child in ep})
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise RegistryError(f"{source}: not valid JSON: {err}") from None
        if isinstance(doc, Mapping):
            doc = doc.get("SERVICE_ENDPOINT", doc.get("results", list(doc.values())))
        if not isinstance(doc, list):
            raise RegistryError(f"{source}: expected a list of GOCDB SERVICE_ENDPOINT records")
        records = [r for r in doc if isinstance(r, Mapping)]
    out = []
    for rec in records:
        stype = str(rec.get("SERVICE_TYPE", ""))
        host, site = rec.get("HOSTNAME"), rec.get("SITENAME")
        if stype not in PERFSONAR_SERVICE_TYPES or not isinstance(host, str) or not isinstance(site, str):
            continue
        if str(rec.get("IN_PRODUCTION", "Y")).upper() in ("N", "FALSE", "0"):
            continue
        if host and site:
            out.append(RegistryEntry(site, host_only(host), source, stype))
    return out


def parse_cric(text: str, source: str) -> list[RegistryEntry]:
    """PerfSonar service records from CRIC (``rcsite``) or its predecessor AGIS (``rc_site``).

    CRIC answers ``?json`` queries with an object keyed by service name, AGIS with a list; both are
    accepted. Records whose ``state``/``status`` says they are not active are skipped.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise RegistryError(f"{source}: not valid JSON: {err}") from None
    records = list(doc.values()) if isinstance(doc, Mapping) else doc
    if not isinstance(records, list):
        raise RegistryError(f"{source}: expected a list or an object of CRIC service records")
    out = []
    for rec in records:
        if not isinstance(rec, Mapping):
            continue
        stype = str(rec.get("type", "PerfSonar"))
        if stype.lower() != "perfsonar":
            continue
        if str(rec.get("state", "ACTIVE")).upper() not in ("ACTIVE", ""):
            continue
        site = rec.get("rcsite") or rec.get("rc_site") or rec.get("site")
        host = rec.get("endpoint") or rec.get("hostname")
        if isinstance(site, Mapping):
            site = site.get("name")
        if isinstance(site, str) and site and isinstance(host, str) and host:
            flavour = rec.get("flavour")
            out.append(RegistryEntry(site, host_only(host), source, flavour if isinstance(flavour, str) else None))
    return out


def host_only(endpoint: str) -> str:
    """``https://ps.example:443/x`` or ``ps.example:8085`` -> ``ps.example`` (lower case)."""
    text = endpoint.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0].lower()
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.lower().rstrip(".")


# --------------------------------------------------------------------------------------------
# Registry loaders (file reads only)


def parse_osg_rgsummary(text: str, source: str, site_key: str = "resource_group") -> list[RegistryEntry]:
    """perfSONAR hosts of OSG Topology's resource-group summary XML (``/rgsummary/xml``).

    ``ResourceSummary/ResourceGroup`` elements carry ``GroupName``, ``Site/Name`` and
    ``Resources/Resource`` with ``Active``, ``FQDN``, ``Services/Service/{Name, Details/endpoint}`` and
    ``WLCGInformation/AccountingName`` — the YAML tree's content, one element per resource group.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise RegistryError(f"{source}: not valid OSG Topology XML: {err}") from None
    out: list[RegistryEntry] = []
    for rg in root.iter("ResourceGroup"):
        group = (rg.findtext("GroupName") or "").strip()
        site_dir = (rg.findtext("Site/Name") or "").strip() or None
        resources: dict[str, Any] = {}
        for i, res in enumerate(rg.iter("Resource")):
            services = {(svc.findtext("Name") or "").strip(): {"Details": {"endpoint": (svc.findtext("Details/endpoint")
                                                                                      or "").strip()}}
                        for svc in res.iter("Service")}
            entry: dict[str, Any] = {"Active": (res.findtext("Active") or "True").strip().lower() != "false",
                                     "Disable": (res.findtext("Disable") or "False").strip().lower() == "true",
                                     "FQDN": (res.findtext("FQDN") or "").strip(), "Services": services}
            accounting = (res.findtext("WLCGInformation/AccountingName") or "").strip()
            if accounting:
                entry["WLCGInformation"] = {"AccountingName": accounting}
            resources[(res.findtext("Name") or str(i)).strip()] = entry
        disabled = (rg.findtext("Disable") or "False").strip().lower() == "true"
        if group:
            out.extend(parse_osg_resource_group({"Resources": resources, "Disable": disabled}, source, group,
                                                site_dir, site_key))
    return out


def osg_yaml(text: str, source: str) -> object:
    """The value of one OSG Topology YAML document; :class:`RegistryError` ``FILE:LINE: message`` if it is not one."""
    try:
        return load(text, source, OSG_YAML_LIMITS)[1]
    except YamlFileError as err:
        raise RegistryError(str(err)) from None


def parse_registry(kind: str, text: str, source: str, site_key: str = "resource_group") -> list[RegistryEntry]:
    """Entries of one registry export given as text (a downloaded file or an HTTP answer)."""
    if kind == "osg-topology":
        if text.lstrip().startswith("<"):
            return parse_osg_rgsummary(text, source, site_key)
        doc = osg_yaml(text, source)
        name = source.rstrip("/").rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
        return parse_osg_resource_group(doc, source, name, None, site_key)
    if kind == "gocdb":
        return parse_gocdb(text, source)
    if kind == "cric":
        return parse_cric(text, source)
    raise RegistryError(f"{source}: unknown registry type {kind!r} (accepted: {', '.join(REGISTRY_TYPES)})")


def load_registry(kind: str, path: Path, site_key: str = "resource_group") -> list[RegistryEntry]:
    """Entries of one registry file or directory. Raises :class:`RegistryError` naming the file."""
    try:
        if kind == "osg-topology" and (path.is_dir() or path.suffix in (".yaml", ".yml")):
            files = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]) if path.is_dir() else [path]
            out: list[RegistryEntry] = []
            for f in files:
                if f.stem.endswith("_downtime") or f.stem == "SITE":
                    continue  # downtime and site-description files list no resources
                try:
                    doc = osg_yaml(read_text(f, OSG_YAML_LIMITS), str(f))
                except YamlFileError as err:  # too large or not UTF-8: FILE: message
                    raise RegistryError(str(err)) from None
                site_dir = f.parent.name if path.is_dir() and f.parent != path else None
                out.extend(parse_osg_resource_group(doc, str(f), f.stem, site_dir, site_key))
            return out
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise RegistryError(f"{path}: cannot read registry: {err.strerror or err}") from None
    return parse_registry(kind, text, str(path), site_key)
