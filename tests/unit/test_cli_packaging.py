"""What setup.cfg declares is what the code imports; the plain install needs no compiler and no numpy."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: import name -> distribution on PyPI
DISTRIBUTION = {"classad2": "htcondor", "htcondor2": "htcondor", "iptc": "python-iptables", "yaml": "pyyaml",
                "prometheus_client": "prometheus-client", "pyroute2": "pyroute2", "urllib3": "urllib3",
                "numpy": "numpy", "matplotlib": "matplotlib", "fastapi": "fastapi", "uvicorn": "uvicorn",
                "requests": "requests"}
#: distributions that build C code at install (no wheel for every platform) or are large: extras only
NOT_IN_THE_PLAIN_INSTALL = {"python-iptables", "numpy", "matplotlib"}
TOOLS = {"pytest", "ruff", "scitokens", "cryptography"}  # the [test] extra: used by tests/, not by the package


def third_party_imports() -> dict[str, set[str]]:
    """Top-level import name -> the files of lark/ and perfsonar/ importing it (function-level too)."""
    found: dict[str, set[str]] = {}
    for path in [*REPO.joinpath("lark").rglob("*.py"), *REPO.joinpath("perfsonar").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("lark", "perfsonar"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def requirement_names(text: str) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()
            for line in text.splitlines() if line.strip() and not line.strip().startswith("#")}


def declared() -> tuple[set[str], dict[str, set[str]]]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    base = requirement_names(cfg["options"]["install_requires"])
    extras = {name: requirement_names(text) for name, text in cfg["options.extras_require"].items()}
    return base, extras


def test_every_imported_distribution_is_declared_and_every_declared_one_is_imported() -> None:
    imports = third_party_imports()
    unknown = set(imports) - set(DISTRIBUTION)
    assert not unknown, f"imports with no known distribution (add them to setup.cfg and here): {unknown}"
    used = {DISTRIBUTION[name] for name in imports}
    base, extras = declared()
    everything = base | set().union(*extras.values())
    assert used <= everything, f"imported but not declared: {used - everything}"
    assert everything - TOOLS <= used, f"declared but never imported: {everything - TOOLS - used}"


def test_the_plain_install_has_no_compiled_or_heavy_extras() -> None:
    base, extras = declared()
    assert not base & NOT_IN_THE_PLAIN_INSTALL
    assert "python-iptables" in extras["iptables"]
    assert "numpy" in extras["report"]


def test_what_the_plain_install_leaves_out_is_imported_only_where_its_extra_is_needed() -> None:
    """numpy and python-iptables are imported only by the report and the iptables backend (and the
    doctor's check of that backend), so the broker, hooks and CLI work without them."""
    imports = third_party_imports()
    assert {f.split("/")[1] for f in imports["numpy"] | imports.get("matplotlib", set())} == {"report"}
    assert imports["iptc"] == {"lark/firewall/iptables.py", "lark/doctor.py"}


def test_the_drop_ins_travel_with_the_package() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    shipped = requirement_names(cfg["options.data_files"]["share/lark/condor_config.d"])
    on_disk = {str(p.relative_to(REPO)).lower() for p in REPO.joinpath("condor_config.d").glob("*.conf")}
    assert shipped == on_disk
