"""``python -m lark.report``: the ``lark report`` command without the rest of the admin CLI."""

import sys

from lark.report.cli import main

sys.exit(main())
