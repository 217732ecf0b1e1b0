"""Set-up shared by every test.

BLAS/OpenMP thread limits must be in the environment before numpy loads (OpenBLAS reads them at start-up),
so ``flows.settings.quiet_process_defaults`` runs here, in the root conftest, which pytest imports before any
test module: with more threads each gradient evaluation of a small model is several times slower on a 2-core
machine (research/stack.md, "BLAS threads"). It also keeps Prefect from sending telemetry.
"""

from flows.settings import quiet_process_defaults

quiet_process_defaults()
