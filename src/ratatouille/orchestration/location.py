"""The module Dagster loads as this project's code location: ``defs`` for ``$RAT_PROJECT``.

``dagster code-server start -m ratatouille.orchestration.location`` (``daemon.start_code_server``
sets the variables), or ``dagster dev -m ratatouille.orchestration.location`` with ``RAT_PROJECT``
exported. ``$RAT_SENSOR_INTERVAL_S`` (``rat serve --sensor-interval``) says how often the
landing-zone sensors run (default 30 s).
"""

from __future__ import annotations

import logging
import os

from ratatouille.orchestration.daemon import SENSOR_INTERVAL_ENV
from ratatouille.orchestration.definitions import DEFAULT_SENSOR_INTERVAL_S, build_definitions


def _sensor_interval() -> int:
    raw = os.environ.get(SENSOR_INTERVAL_ENV, "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_SENSOR_INTERVAL_S
    except ValueError:
        logging.getLogger("ratatouille.orchestration").warning(
            "%s=%r is not a number of seconds; sensors run every %d s",
            SENSOR_INTERVAL_ENV,
            raw,
            DEFAULT_SENSOR_INTERVAL_S,
        )
        return DEFAULT_SENSOR_INTERVAL_S


# Not strict: a workspace with a broken pipeline is left out (and logged), the others keep running.
defs = build_definitions(
    os.environ.get("RAT_PROJECT") or os.getcwd(), sensor_interval_s=_sensor_interval(), strict=False
)
