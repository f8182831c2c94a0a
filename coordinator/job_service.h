// The gRPC JobService (proto/dpo/v1/job_service.proto) over a JobStore and a JobRunner, and the
// Prometheus exposition of the same jobs. This is the RPC boundary: engine errors (dpo::Error)
// become grpc::Status here, and nothing below it sees gRPC.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/config/job_spec.h"
#include "coordinator/job_runner.h"
#include "coordinator/job_store.h"
#include "dpo/v1/job_service.grpc.pb.h"

namespace dpo {

struct JobServiceOptions {
  // Ranks of each worker group: the W a submitted job's memory is planned for.
  // Default: 1.
  int64_t ranks_per_group = 1;
  // Memory of one GPU in GiB. When set, SubmitJob refuses (INVALID_ARGUMENT) a job whose
  // train.sharding mode does not fit it per common/config/memory_plan.h.
  // Default: null = no check (CPU clusters).
  std::optional<double> gpu_memory_gib;
};

class JobServiceImpl final : public v1::JobService::Service {
 public:
  // store and runner must outlive the service.
  JobServiceImpl(JobStore& store, JobRunner& runner, JobServiceOptions options = {})
      : store_(store), runner_(runner), options_(options) {}

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
  // INVALID_ARGUMENT naming the parts and the modes that fit when `spec` does not fit the
  // devices; OK when it fits, when there is no check, or when its config.json cannot be read
  // (not a reason to refuse the spec alone: the job's worker reports the file when it loads it).
  grpc::Status CheckMemory(const JobSpec& spec) const;

  JobStore& store_;
  JobRunner& runner_;
  JobServiceOptions options_;
};

// The jobs as Prometheus gauges: dpo_jobs{state=...}, and for each running job the last logged
// train metrics (dpo_train_loss{job="3",name="..."}, dpo_train_rewards_accuracies, ...).
std::string RenderJobMetrics(JobStore& store);

}  // namespace dpo
