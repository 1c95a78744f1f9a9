"""The module Dagster loads as this project's code location: ``defs`` for ``$RAT_PROJECT``.

``dagster-daemon run -m ratatouille.orchestration.location`` (``daemon.start_daemon`` sets the
variable), or ``dagster dev -m ratatouille.orchestration.location`` with ``RAT_PROJECT`` exported.
"""

from __future__ import annotations

import os

from ratatouille.orchestration.definitions import build_definitions

# Not strict: a workspace with a broken pipeline is left out (and logged), the others keep running.
defs = build_definitions(os.environ.get("RAT_PROJECT") or os.getcwd(), strict=False)
