"""Submits a job spec to dpo-coordinator and watches it to the end: the JobService from Python
(grpcio), with a bearer token. Generate the stubs first, then put their folder on PYTHONPATH:

    python -m grpc_tools.protoc -I proto --python_out=STUBS --grpc_python_out=STUBS \
        proto/dpo/v1/job_service.proto
    PYTHONPATH=STUBS python examples/python_client.py --server 127.0.0.1:50051 \
        --token-file ~/.config/dpo/token [--ca-cert ca.pem] examples/job.yaml

Prints one line per update and exits 0 when the job succeeded, 1 otherwise."""
import argparse
import os
import sys

import grpc

from dpo.v1 import job_service_pb2 as pb
from dpo.v1 import job_service_pb2_grpc as rpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--ca-cert", help="speak TLS, trusting this CA certificate (PEM)")
    parser.add_argument("spec")
    args = parser.parse_args()

    with open(args.token_file) as f:
        metadata = [("authorization", f"Bearer {f.read().strip()}")]
    if args.ca_cert:
        with open(args.ca_cert, "rb") as f:
            channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(f.read()))
    else:
        channel = grpc.insecure_channel(args.server)
    stub = rpc.JobServiceStub(channel)

    with open(args.spec, "rb") as f:
        request = pb.SubmitJobRequest(spec_yaml=f.read(), name=args.spec.encode(),
                                      base_dir=os.path.dirname(os.path.abspath(args.spec)).encode())
    try:
        job = stub.SubmitJob(request, metadata=metadata, timeout=30)
        print(f"submitted job {job.id}", flush=True)
        last = job
        for last in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=metadata):
            print(f"job {last.id} {pb.JobState.Name(last.state)} step "
                  f"{last.progress.global_step}/{last.progress.total_steps}", flush=True)
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    if last.error:
        print(f"error: {last.error}")
    return 0 if last.state == pb.JOB_STATE_SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
