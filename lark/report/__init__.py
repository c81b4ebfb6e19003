"""``lark report``: network accounting from job history and transfer-session analysis from GridFTP logs.

Entry points:

* :func:`lark.report.history.read_history_file` (schedd history file),
  :func:`lark.report.history.read_history_json` (``condor_history -json`` output) and
  :func:`lark.report.history.read_schedd_history` (a live schedd) yield :class:`HistoryJob` values;
* :func:`lark.report.gridftp.iter_gridftp` / :func:`lark.report.gridftp.parse_line` read transfer logs;
* :class:`lark.report.accounting.HistoryAccumulator` and :func:`lark.report.transfers.analyze_transfers`
  are the pure analyses; :func:`lark.report.report.produce` runs everything;
* :func:`lark.report.plots.write_plots` draws the figures of ``--plot`` and
  :func:`lark.report.page.report_page` is its HTML page;
* :func:`lark.report.cli.add_parser` / :func:`lark.report.cli.run` are the ``lark report`` command
  (also ``python -m lark.report``).
"""

from lark.report.history import (
    HistoryJob,
    HistoryStats,
    read_history_file,
    read_history_json,
    read_schedd_history,
)

__all__ = ["HistoryJob", "HistoryStats", "read_history_file", "read_history_json", "read_schedd_history"]
