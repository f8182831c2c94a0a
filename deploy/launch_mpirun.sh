#!/usr/bin/env bash
# Launches one DPO job on hosts with GPUs: one dpo-worker rank per GPU.
#   deploy/launch_mpirun.sh JOB.yaml HOSTFILE GPUS_PER_HOST
# HOSTFILE is an OpenMPI hostfile ("node1 slots=8"). Each rank picks GPU = its local rank; NCCL
# is bootstrapped through MPI, so only mpirun's own ssh/launcher access is needed.
# SIGTERM to this script (mpirun) stops the job at a step boundary after a checkpoint
# (deploy/README.md): mpirun passes it on after odls_base_sigkill_timeout seconds and sends
# SIGKILL as long after that; Open MPI's default, 1 s, is too short for a save.
set -euo pipefail
job=${1:?job spec}; hostfile=${2:?hostfile}; gpus=${3:?GPUs per host}
here=$(cd "$(dirname "$0")/.." && pwd)
hosts=$(grep -cv '^\s*\(#\|$\)' "$hostfile")
exec mpirun -np $((hosts * gpus)) --hostfile "$hostfile" --map-by ppr:"$gpus":node --bind-to none \
  --mca odls_base_sigkill_timeout 120 \
  -x NCCL_DEBUG=${NCCL_DEBUG:-WARN} -x LD_LIBRARY_PATH -x OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} \
  "$here/build/bin/dpo-worker" --job "$job"
