// The gRPC JobService (proto/dpo/v1/job_service.proto) over a JobStore and a JobRunner, and the
// Prometheus exposition of the same jobs. This is the RPC boundary: engine errors (dpo::Error)
// become grpc::Status here, and nothing below it sees gRPC.
//
// Every call is admitted first: the caller is authenticated (TokenStore: a Bearer token, or the
// local admin in single-user mode), then counted against its request rate. Handlers never open a
// file a request names (paths are checked with stat only; progress is what the runner last read),
// and every reply is bounded in size.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/config/job_spec.h"
#include "coordinator/job_runner.h"
#include "coordinator/job_store.h"
#include "coordinator/path_policy.h"
#include "coordinator/request_guard.h"
#include "coordinator/token_store.h"
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
  // Where a spec's paths may point (path_policy.h); each user's outputs go under
  // <roots.write>/<user name>. Default: anywhere (single-user mode).
  PathRoots roots;
  // Every call needs a token, even while none exists. Default: false = a token is needed as soon
  // as one exists; before that every caller is the local admin (single-user mode, loopback only).
  bool require_auth = false;
  // Jobs one user may have queued at once; one more is RESOURCE_EXHAUSTED. Default: 100.
  int max_queued_per_user = 100;
  // Calls per second one user may make on average (bursts of twice that); more are
  // RESOURCE_EXHAUSTED. 0: no limit. Default: 50, ten times what dpoctl's polling needs.
  double max_rps_per_user = 50;
  // How often WatchJob looks at its job. Default: 250 ms.
  std::chrono::milliseconds watch_poll{250};
};

class JobServiceImpl final : public v1::JobService::Service {
 public:
  // store, runner and tokens must outlive the service.
  JobServiceImpl(JobStore& store, JobRunner& runner, TokenStore& tokens, JobServiceOptions options = {})
      : store_(store),
        runner_(runner),
        tokens_(tokens),
        options_(std::move(options)),
        limiter_(options_.max_rps_per_user) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request, v1::Job* job) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request, v1::Job* job) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request, v1::Job* job) override;
  grpc::Status GetJobLog(grpc::ServerContext* context, const v1::GetJobLogRequest* request, v1::JobLog* log) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::Job>* writer) override;

  // Ends every WatchJob stream at its next poll (before the server shuts down).
  void Stop() { stopping_ = true; }

 private:
  // The caller, or UNAUTHENTICATED / RESOURCE_EXHAUSTED in `status`.
  std::optional<Principal> Admit(const grpc::ServerContext& context, grpc::Status* status);
  // The roots of `who`'s jobs: a user writes (and reads outputs) under <write root>/<name> only,
  // so that no job can overwrite, delete or read another user's outputs; an admin anywhere.
  PathRoots RootsOf(const Principal& who) const;
  // Job `id` if `who` may see it; otherwise NOT_FOUND, PERMISSION_DENIED or INTERNAL in `status`.
  std::optional<JobRecord> FindJob(const Principal& who, int64_t id, grpc::Status* status);
  // The job as a reply; `listed`: without its spec, long texts cut.
  void ToProto(const JobRecord& record, bool listed, v1::Job* job);
  // INVALID_ARGUMENT naming the parts and the modes that fit when `spec` does not fit the
  // devices; OK when it fits, when there is no check, or when its config.json cannot be read
  // (not a reason to refuse the spec alone: the job's worker reports the file when it loads it).
  grpc::Status CheckMemory(const JobSpec& spec) const;

  JobStore& store_;
  JobRunner& runner_;
  TokenStore& tokens_;
  const JobServiceOptions options_;
  RateLimiter limiter_;
  std::mutex submit_mutex_;  // a user's queued-job count and its insert are one step
  // Open WatchJob streams per user: each holds a server thread while it lasts, so they are
  // bounded per user and in all (the server has 256 threads).
  std::mutex watch_mutex_;
  std::map<std::string, int> watches_;  // guarded by watch_mutex_; users with open streams only
  int total_watches_ = 0;               // guarded by watch_mutex_
  std::atomic<bool> stopping_{false};
};

// The jobs as Prometheus gauges: dpo_jobs{state=...}, and for each running job the last train
// metrics its worker reported (dpo_train_loss{job_id="3",name="..."}, dpo_train_rewards_accuracies,
// ...) and each rank's own figures (dpo_rank_step_seconds{job_id="3",name="...",rank="1"}, ...;
// docs/worker_status.md lists them).
std::string RenderJobMetrics(JobStore& store, JobRunner& runner);

}  // namespace dpo
