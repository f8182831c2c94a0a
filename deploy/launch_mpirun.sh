#!/usr/bin/env bash
# Launches one DPO job on hosts with GPUs: one dpo-worker rank per GPU.
#   deploy/launch_mpirun.sh JOB.yaml HOSTFILE GPUS_PER_HOST
# HOSTFILE is an OpenMPI hostfile ("node1 slots=8"). Each rank picks GPU = its local rank; NCCL
# is bootstrapped through MPI, so only mpirun's own ssh/launcher access is needed.
set -euo pipefail
job=${1:?job spec}; hostfile=${2:?hostfile}; gpus=${3:?GPUs per host}
here=$(cd "$(dirname "$0")/.." && pwd)
hosts=$(grep -cv '^\s*\(#\|$\)' "$hostfile")
exec mpirun -np $((hosts * gpus)) --hostfile "$hostfile" --map-by ppr:"$gpus":node --bind-to none \
  -x NCCL_DEBUG=${NCCL_DEBUG:-WARN} -x LD_LIBRARY_PATH -x OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} \
  "$here/build/bin/dpo-worker" --job "$job"
