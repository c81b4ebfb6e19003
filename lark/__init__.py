"""Lark: per-job networks for HTCondor.

``__version__`` is the one version of the package: setup.cfg reads it (``attr:``), every
executable's ``--version`` prints it, and ``lark doctor`` compares the broker's with the CLI's.
"""

__version__ = "0.1.0"


def extra_hint(extra: str) -> str:
    """How to add one optional part (a setup.cfg extra) to the environment this code runs in, in
    the admin guide's words: that environment's own pip, the wheel (or checkout) with the extra."""
    import sys

    return (f"{sys.prefix}/bin/pip install 'htcondor_lark-{__version__}-py3-none-any.whl[{extra}]' "
            "(or '/path/to/checkout[" + extra + "]'; docs/admin-guide.md, Install)")
