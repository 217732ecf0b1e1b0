"""Orchestration: Prefect flows and tasks that read the warehouse, call one pure function, write the result.

Rooms: ``ingest/`` (landing files to clean tables and quarantine), ``simulation/`` (simulated field studies),
``cli/`` (the command line, a leaf nothing imports), ``warehouse.py`` (opening the warehouse), ``settings.py``
(the one reader of ``FLOURISH_*``), ``statistics``/``analysis_flows``/``privacy_flows``/``scoring``/``pipeline``
(the stages).

Importing ``flows`` applies the quiet process defaults (``flows.settings.quiet_process_defaults``) before any
flow module imports Prefect or numpy: no telemetry or analytics requests, one BLAS thread. This is the one
place the environment is written, and it never overrides a value the user has set.
"""

from flows.settings import quiet_process_defaults

quiet_process_defaults()
