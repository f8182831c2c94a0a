#include "coordinator/job_service.h"

#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config/job_spec.h"
#include "common/config/memory_plan.h"
#include "common/model/path_util.h"
#include "common/util/error.h"
#include "coordinator/metrics_http.h"

namespace dpo {
namespace {

constexpr size_t kMaxSpecBytes = 1 << 20;

v1::JobState ToProto(JobState state) {
  switch (state) {
    case JobState::kQueued: return v1::JOB_STATE_QUEUED;
    case JobState::kRunning: return v1::JOB_STATE_RUNNING;
    case JobState::kSucceeded: return v1::JOB_STATE_SUCCEEDED;
    case JobState::kFailed: return v1::JOB_STATE_FAILED;
    case JobState::kCancelled: return v1::JOB_STATE_CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

// The last "train" line of the job's metrics file (its tail only: the file grows with the run).
void ReadProgress(const JobRecord& record, v1::TrainProgress* progress) {
  JobSpec spec;
  try {
    spec = ParseJobSpec(record.spec_yaml, "job " + std::to_string(record.id));
  } catch (const Error&) {
    return;  // stored specs were validated at submission; nothing to report otherwise
  }
  if (spec.train.max_steps > 0) progress->set_total_steps(spec.train.max_steps);
  const std::string& file = spec.output.metrics_file;
  const std::string path = file.starts_with("/") ? file : JoinPath(spec.output.dir, file);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return;
  const std::streamoff size = in.tellg();
  constexpr std::streamoff kTail = 64 * 1024;
  in.seekg(size > kTail ? size - kTail : 0);
  std::string line, last_train;
  while (std::getline(in, line)) {
    if (line.find("\"split\":\"train\"") != std::string::npos) last_train = line;
  }
  if (last_train.empty()) return;
  const nlohmann::json j = nlohmann::json::parse(last_train, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  for (const auto& [key, value] : j.items()) {
    if (key == "step" && value.is_number_integer()) progress->set_global_step(value.get<int64_t>());
    else if (value.is_number() && key != "step") (*progress->mutable_metrics())[key] = value.get<double>();
  }
}

void ToProto(const JobRecord& r, v1::Job* job) {
  job->set_id(r.id);
  job->set_name(r.name);
  job->set_state(ToProto(r.state));
  job->set_spec_yaml(r.spec_yaml);
  job->set_output_dir(r.output_dir);
  job->set_submitted_unix_ms(r.submitted_unix_ms);
  job->set_started_unix_ms(r.started_unix_ms);
  job->set_finished_unix_ms(r.finished_unix_ms);
  job->set_exit_code(r.exit_code);
  job->set_error(r.error);
  job->set_attempts(r.attempts);
  job->set_data_prepared(r.data_prepared);
  ReadProgress(r, job->mutable_progress());
}

grpc::Status Internal(const std::exception& e) {
  return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
}

// Job `id`, or nullopt with `status` set: NOT_FOUND, or INTERNAL when the store fails.
std::optional<JobRecord> FindJob(JobStore& store, int64_t id, grpc::Status* status) {
  try {
    if (auto record = store.Get(id)) return record;
    *status = grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + std::to_string(id));
  } catch (const std::exception& e) {
    *status = Internal(e);
  }
  return std::nullopt;
}

}  // namespace

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                                       v1::Job* job) {
  if (request->spec_yaml().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "spec_yaml: empty");
  }
  if (request->spec_yaml().size() > kMaxSpecBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "spec_yaml: " + std::to_string(request->spec_yaml().size()) +
                            " bytes, more than the 1 MiB a job spec may have");
  }
  const std::string source = request->name().empty() ? "spec" : request->name();
  JobSpec spec;
  try {
    spec = ParseJobSpec(request->spec_yaml(), source, request->base_dir());
  } catch (const Error& e) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
  }
  if (grpc::Status memory = CheckMemory(spec); !memory.ok()) return memory;
  try {
    const std::string name = request->name().empty() ? spec.output.dir : request->name();
    const JobStore::InsertResult added = store_.Insert(name, ToYaml(spec), spec.output.dir);
    if (!added.inserted) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "output.dir: \"" + spec.output.dir + "\" is in use by job " +
                              std::to_string(added.job.id) + " (" +
                              std::string(ToString(added.job.state)) + ")");
    }
    ToProto(added.job, job);
  } catch (const std::exception& e) {
    return Internal(e);
  }
  runner_.Wake();
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CheckMemory(const JobSpec& spec) const {
  if (!options_.gpu_memory_gib) return grpc::Status::OK;
  MemoryPlanOptions plan_options;
  plan_options.ranks = options_.ranks_per_group;
  plan_options.gpu = spec.model.device != ModelSection::Device::kCpu;
  plan_options.device_gib = *options_.gpu_memory_gib;
  MemoryPlan plan;
  try {
    plan = PlanMemoryForSpec(spec, plan_options);
  } catch (const Error&) {
    return grpc::Status::OK;  // an unreadable config.json fails the job when its worker loads it
  }
  if (plan.mode(spec.train.sharding).fits) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, DescribeMisfit(plan, spec.train.sharding));
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                                    v1::Job* job) {
  grpc::Status status;
  const auto record = FindJob(store_, request->id(), &status);
  if (record) ToProto(*record, job);
  return status;
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  if (request->limit() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "limit: must be >= 0");
  }
  try {
    for (const JobRecord& record : store_.List(request->limit())) ToProto(record, response->add_jobs());
  } catch (const std::exception& e) {
    return Internal(e);
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                                       v1::Job* job) {
  grpc::Status status;
  const auto record = FindJob(store_, request->id(), &status);
  if (!record) return status;
  try {
    if (IsFinished(record->state)) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "job " + std::to_string(record->id) + " already " +
                              std::string(ToString(record->state)));
    }
    if (!store_.RequestCancel(record->id)) runner_.Stop(record->id);
    ToProto(*store_.Get(record->id), job);
  } catch (const Error& e) {
    // Finished between the two reads.
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, e.what());
  } catch (const std::exception& e) {
    return Internal(e);
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetJobLog(grpc::ServerContext*, const v1::GetJobLogRequest* request,
                                       v1::JobLog* log) {
  if (request->tail_bytes() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "tail_bytes: must be >= 0");
  }
  grpc::Status status;
  if (!FindJob(store_, request->id(), &status)) return status;
  std::ifstream in(runner_.LogPath(request->id()), std::ios::binary | std::ios::ate);
  if (!in) return grpc::Status::OK;  // not launched yet
  const std::streamoff size = in.tellg();
  const std::streamoff tail = request->tail_bytes() > 0 ? request->tail_bytes() : 64 * 1024;
  const std::streamoff start = size > tail ? size - tail : 0;
  in.seekg(start);
  std::string text(static_cast<size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  log->set_text(text);
  log->set_truncated(start > 0);
  return grpc::Status::OK;
}

std::string RenderJobMetrics(JobStore& store) {
  std::ostringstream out;
  out << "# HELP dpo_jobs Jobs known to the coordinator, by state.\n# TYPE dpo_jobs gauge\n";
  for (const auto& [state, count] : store.CountByState()) {
    out << "dpo_jobs{state=\"" << ToString(state) << "\"} " << count << "\n";
  }
  // Per running job, its last logged train metrics; one family per metric name.
  std::map<std::string, std::vector<std::string>> families;
  for (const JobRecord& record : store.List(0, JobState::kRunning)) {
    v1::TrainProgress progress;
    ReadProgress(record, &progress);
    const std::string labels = "{job=\"" + std::to_string(record.id) + "\",name=\"" +
                               PrometheusLabel(record.name) + "\"}";
    families["dpo_train_global_step"].push_back(labels + " " + std::to_string(progress.global_step()));
    for (const auto& [key, value] : progress.metrics()) {
      std::ostringstream sample;
      sample.precision(17);
      sample << labels << " " << value;
      families["dpo_train_" + PrometheusName(key)].push_back(sample.str());
    }
  }
  for (const auto& [name, samples] : families) {
    out << "# TYPE " << name << " gauge\n";
    for (const std::string& sample : samples) out << name << sample << "\n";
  }
  return out.str();
}

}  // namespace dpo
