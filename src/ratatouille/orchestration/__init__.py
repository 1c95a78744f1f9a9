"""Orchestration: the project as a Dagster code location, and the Dagster daemon that runs it.

The only package that imports Dagster, and only in the modules that need it:

- ``plan``: what to orchestrate, read from the workspaces (no Dagster);
- ``assets``: one multi-asset per workspace whose op calls ``Workspace.run`` once per selection
  (so a Dagster run is one Ratatouille run: write-audit-publish, one all-or-nothing publish,
  the same run records as ``rat run``), model tests as asset checks, freshness checks;
- ``triggers``: ``schedule:`` crons as schedules, landing-zone sensors for files sources, the
  freshness sensor;
- ``definitions``: ``build_definitions(project_root)`` puts them together;
- ``location``: the module Dagster loads (``defs``, for ``$RAT_PROJECT``);
- ``daemon``: start and stop Dagster's code server, daemon and web UI for a project (no Dagster import);
- ``scheduler``: ``Scheduler``, those processes as ``rat serve`` runs them: one shared code server,
  restarts, a reload when the project's files change (no Dagster import).
"""
