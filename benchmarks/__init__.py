"""Benchmarks: scripts that print ratios, run from the repository root as ``python -m benchmarks.<name>``.

They import the product as installed in the virtual environment and the shared test support from
``tests.support``; none of them edits ``sys.path``. See docs/benchmarks.md.
"""
