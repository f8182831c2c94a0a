#!/usr/bin/env bash
# Runs one training job with build/bin/dpo-worker: as $RANKS MPI ranks under mpirun when RANKS > 1
# (oversubscribed, unbound: a workstation, not a cluster), else as one process.
#   scripts/run_worker.sh JOB.yaml
set -euo pipefail
ranks=${RANKS:-1}
if [ "$ranks" -gt 1 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  exec mpirun -np "$ranks" --oversubscribe --bind-to none build/bin/dpo-worker --job "$1"
fi
exec build/bin/dpo-worker --job "$1"
