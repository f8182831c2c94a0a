// The gRPC JobService (proto/dpo/v1/job_service.proto) over a JobStore and a JobRunner, and the
// Prometheus exposition of the same jobs. This is the RPC boundary: engine errors (dpo::Error)
// become grpc::Status here, and nothing below it sees gRPC.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "coordinator/job_runner.h"
#include "coordinator/job_store.h"
#include "dpo/v1/job_service.grpc.pb.h"

namespace dpo {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  // store and runner must outlive the service.
  JobServiceImpl(JobStore& store, JobRunner& runner) : store_(store), runner_(runner) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* job) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* job) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* job) override;
  grpc::Status GetJobLog(grpc::ServerContext* context, const v1::GetJobLogRequest* request,
                         v1::JobLog* log) override;

 private:
  JobStore& store_;
  JobRunner& runner_;
};

// The jobs as Prometheus gauges: dpo_jobs{state=...}, and for each running job the last logged
// train metrics (dpo_train_loss{job="3",name="..."}, dpo_train_rewards_accuracies, ...).
std::string RenderJobMetrics(JobStore& store);

}  // namespace dpo
