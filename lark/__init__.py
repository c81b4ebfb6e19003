"""Lark: per-job networks for HTCondor.

``__version__`` is the one version of the package: setup.cfg reads it (``attr:``), every
executable's ``--version`` prints it, and ``lark doctor`` compares the broker's with the CLI's.
"""

__version__ = "0.1.0"
