#include "coordinator/job_service.h"

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>
#include <vector>

#include "common/config/memory_plan.h"
#include "common/util/error.h"
#include "common/util/path_util.h"
#include "coordinator/metrics_http.h"

namespace dpo {
namespace {

constexpr size_t kMaxSpecBytes = 1 << 20;
constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxBaseDirBytes = 4096;
// ListJobs: pages of 50 by default, 100 at most, each text cut to 1 KiB: a page stays far below
// gRPC's 4 MiB message limit whatever the jobs hold.
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 100;
constexpr size_t kMaxListedText = 1024;
// GetJob and WatchJob: the spec is bounded at submission; the error is the worker's one line.
constexpr size_t kMaxErrorText = size_t{16} * 1024;
constexpr int64_t kDefaultLogTail = int64_t{64} * 1024;
constexpr int64_t kMaxLogTail = 1 << 20;
// Open WatchJob streams: per user, and in all (of the server's 256 threads).
constexpr int kMaxWatchesPerUser = 8;
constexpr int kMaxWatches = 128;
// A config.json the memory check reads (in the handler) must be a regular file of at most this.
constexpr off_t kMaxConfigBytes = 1 << 20;

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

grpc::Status Internal(const std::exception& e) {
  return grpc::Status(grpc::StatusCode::INTERNAL, ReplyText(e.what(), kMaxErrorText));
}

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, ReplyText(message, kMaxErrorText));
}

// Every attempt of a job (GetJob only: a listing stays one query), reasons bounded as errors are.
void AddAttempts(const std::vector<AttemptRecord>& attempts, v1::Job* job) {
  for (const AttemptRecord& a : attempts) {
    v1::JobAttempt* attempt = job->add_attempt_history();
    attempt->set_number(a.number);
    attempt->set_launch_id(a.launch_id);
    attempt->set_pgid(a.pgid);
    attempt->set_started_unix_ms(a.started_unix_ms);
    attempt->set_finished_unix_ms(a.finished_unix_ms);
    attempt->set_exit_code(a.exit_code);
    attempt->set_signal(a.signal);
    attempt->set_reason(ReplyText(a.reason, kMaxErrorText));
  }
}

// INVALID_ARGUMENT naming `field` unless `text` is valid UTF-8 of at most `max_bytes`.
grpc::Status CheckText(const char* field, const std::string& text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Invalid(std::string(field) + ": " + std::to_string(text.size()) + " bytes, more than the " +
                   std::to_string(max_bytes) + " allowed");
  }
  if (const auto at = FirstInvalidUtf8(text)) {
    return Invalid(std::string(field) + ": invalid UTF-8 at byte " + std::to_string(*at));
  }
  return grpc::Status::OK;
}

// Whether the memory check may read `path` in a handler: a regular file (stat, never open), small.
bool SmallRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= kMaxConfigBytes;
}

// "Bearer <token>" from the call's metadata; nullopt when the header is absent.
std::optional<std::string_view> BearerHeader(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return std::string_view(it->second.data(), it->second.size());
}

}  // namespace

std::optional<Principal> JobServiceImpl::Admit(const grpc::ServerContext& context, grpc::Status* status) {
  std::optional<Principal> who;
  try {
    const auto header = BearerHeader(context);
    if (header) {
      if (header->starts_with("Bearer ")) who = tokens_.Authenticate(header->substr(7));
      if (!who) {
        *status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "authorization: not a valid Bearer token");
        return std::nullopt;
      }
    } else if (options_.require_auth || tokens_.Any()) {
      *status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                             "authorization: missing (send \"authorization: Bearer <token>\")");
      return std::nullopt;
    } else {
      who = Principal{"local", true};  // single-user mode: loopback, no token configured
    }
  } catch (const std::exception& e) {
    *status = Internal(e);
    return std::nullopt;
  }
  if (!limiter_.Allow(who->name)) {
    *status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "user \"" + who->name + "\" is over its request rate (" +
                               std::to_string(static_cast<int>(options_.max_rps_per_user)) + "/s)");
    return std::nullopt;
  }
  return who;
}

PathRoots JobServiceImpl::RootsOf(const Principal& who) const {
  PathRoots roots = options_.roots;
  if (!who.admin && !roots.write.empty()) roots.write = JoinPath(roots.write, who.name);
  return roots;
}

std::optional<JobRecord> JobServiceImpl::FindJob(const Principal& who, int64_t id, grpc::Status* status) {
  try {
    auto record = store_.Get(id);
    if (!record) {
      *status = grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + std::to_string(id));
    } else if (!who.admin && record->owner != who.name) {
      *status =
          grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "job " + std::to_string(id) + " belongs to another user");
    } else {
      return record;
    }
  } catch (const std::exception& e) {
    *status = Internal(e);
  }
  return std::nullopt;
}

void JobServiceImpl::ToProto(const JobRecord& r, bool listed, v1::Job* job) {
  const size_t text_limit = listed ? kMaxListedText : kMaxErrorText;
  job->set_id(r.id);
  job->set_name(ReplyText(r.name, listed ? kMaxListedText : kMaxNameBytes));
  job->set_state(dpo::ToProto(r.state));
  if (!listed) job->set_spec_yaml(ReplyText(r.spec_yaml, kMaxSpecBytes * 2));
  job->set_output_dir(ReplyText(r.output_dir, listed ? kMaxListedText : 2 * kMaxBaseDirBytes));
  job->set_submitted_unix_ms(r.submitted_unix_ms);
  job->set_started_unix_ms(r.started_unix_ms);
  job->set_finished_unix_ms(r.finished_unix_ms);
  job->set_exit_code(r.exit_code);
  job->set_error(ReplyText(r.error, text_limit));
  job->set_attempts(r.attempts);
  job->set_data_prepared(r.data_prepared);
  job->set_owner(r.owner);
  // What the runner last read (running) or recorded in the store (since): no file is opened here.
  const auto status = runner_.Progress(r);
  if (status) {
    v1::TrainProgress* progress = job->mutable_progress();
    progress->set_global_step(status->step);
    progress->set_total_steps(status->total_steps);
    for (const auto& [key, value] : status->metrics) {
      if (progress->metrics_size() >= 64) break;
      (*progress->mutable_metrics())[ReplyText(key, 64)] = value;
    }
  }
}

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                                       v1::Job* job) {
  grpc::Status status;
  const auto who = Admit(*context, &status);
  if (!who) return status;
  if (request->spec_yaml().empty()) return Invalid("spec_yaml: empty");
  for (const auto& [field, text, limit] : {std::tuple{"spec_yaml", &request->spec_yaml(), kMaxSpecBytes},
                                           std::tuple{"base_dir", &request->base_dir(), kMaxBaseDirBytes},
                                           std::tuple{"name", &request->name(), kMaxNameBytes}}) {
    if (grpc::Status bad = CheckText(field, *text, limit); !bad.ok()) return bad;
  }
  const std::string source = request->name().empty() ? "spec" : request->name();
  JobSpec spec;
  try {
    spec = ParseJobSpec(request->spec_yaml(), source, request->base_dir());
    ConfinePaths(spec, RootsOf(*who));
  } catch (const Error& e) {
    return Invalid(e.what());
  }
  if (grpc::Status memory = CheckMemory(spec); !memory.ok()) return memory;
  try {
    std::lock_guard lock(submit_mutex_);
    JobStore::ListQuery queued{who->name, JobState::kQueued, options_.max_queued_per_user, 0};
    if (static_cast<int>(store_.List(queued).jobs.size()) >= options_.max_queued_per_user) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "user \"" + who->name + "\" has " +
                                                                    std::to_string(options_.max_queued_per_user) +
                                                                    " jobs queued already, the most allowed");
    }
    const std::string name = request->name().empty() ? spec.output.dir : request->name();
    const JobStore::InsertResult added = store_.Insert(name, ToYaml(spec), spec.output.dir, who->name);
    if (!added.inserted) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          ReplyText("output.dir: \"" + spec.output.dir + "\" is in use by job " + std::to_string(added.job.id) + " (" +
                        std::string(ToString(added.job.state)) + ")",
                    kMaxErrorText));
    }
    ToProto(added.job, false, job);
  } catch (const std::exception& e) {
    return Internal(e);
  }
  runner_.Wake();
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CheckMemory(const JobSpec& spec) const {
  if (!options_.gpu_memory_gib) return grpc::Status::OK;
  const std::string config = spec.model.path ? JoinPath(*spec.model.path, "config.json") : spec.model.random->config;
  if (!SmallRegularFile(config) ||
      (spec.reference.path && !SmallRegularFile(JoinPath(*spec.reference.path, "config.json")))) {
    return grpc::Status::OK;  // the worker reports an unreadable config when it loads it
  }
  MemoryPlanOptions plan_options;
  plan_options.ranks = options_.ranks_per_group;
  plan_options.gpu = spec.model.device != ModelSection::Device::kCpu;
  plan_options.device_gib = *options_.gpu_memory_gib;
  MemoryPlan plan;
  try {
    plan = PlanMemoryForSpec(spec, plan_options);
  } catch (const Error&) {
    return grpc::Status::OK;  // an unparsable config.json fails the job when its worker loads it
  }
  if (plan.mode(spec.train.sharding).fits) return grpc::Status::OK;
  return Invalid(DescribeMisfit(plan, spec.train.sharding));
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request, v1::Job* job) {
  grpc::Status status;
  const auto who = Admit(*context, &status);
  if (!who) return status;
  const auto record = FindJob(*who, request->id(), &status);
  if (!record) return status;
  ToProto(*record, false, job);
  try {
    AddAttempts(store_.Attempts(record->id), job);
  } catch (const std::exception& e) {
    return Internal(e);
  }
  return status;
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  grpc::Status status;
  const auto who = Admit(*context, &status);
  if (!who) return status;
  if (request->page_size() < 0) return Invalid("page_size: must be >= 0");
  JobStore::ListQuery query;
  query.owner = who->admin ? "" : who->name;
  query.page_size = request->page_size() == 0 ? kDefaultPageSize : std::min(request->page_size(), kMaxPageSize);
  if (!request->page_token().empty()) {
    const std::string& token = request->page_token();
    char* end = nullptr;
    query.before_id = token.size() <= 19 ? std::strtoll(token.c_str(), &end, 10) : 0;
    if (query.before_id <= 0 || end != token.c_str() + token.size()) {
      return Invalid("page_token: not a next_page_token of ListJobs");
    }
  }
  try {
    const JobStore::ListPage page = store_.List(query);
    for (const JobRecord& record : page.jobs) ToProto(record, true, response->add_jobs());
    if (page.next_before_id > 0) response->set_next_page_token(std::to_string(page.next_before_id));
  } catch (const std::exception& e) {
    return Internal(e);
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                                       v1::Job* job) {
  grpc::Status status;
  const auto who = Admit(*context, &status);
  if (!who) return status;
  const auto record = FindJob(*who, request->id(), &status);
  if (!record) return status;
  try {
    if (IsFinished(record->state)) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "job " + std::to_string(record->id) + " already " + std::string(ToString(record->state)));
    }
    if (!store_.RequestCancel(record->id)) runner_.Stop(record->id);
    ToProto(*store_.Get(record->id), false, job);
  } catch (const Error& e) {
    // Finished between the two reads.
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, ReplyText(e.what(), kMaxErrorText));
  } catch (const std::exception& e) {
    return Internal(e);
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetJobLog(grpc::ServerContext* context, const v1::GetJobLogRequest* request,
                                       v1::JobLog* log) {
  grpc::Status status;
  const auto who = Admit(*context, &status);
  if (!who) return status;
  if (request->tail_bytes() < 0) return Invalid("tail_bytes: must be >= 0");
  if (!FindJob(*who, request->id(), &status)) return status;
  // The coordinator's own file (<work-dir>/job-N/worker.log), not one a request names.
  std::ifstream in(runner_.LogPath(request->id()), std::ios::binary | std::ios::ate);
  if (!in) return grpc::Status::OK;  // not launched yet
  const std::streamoff size = in.tellg();
  const std::streamoff tail =
      request->tail_bytes() > 0 ? std::min(request->tail_bytes(), kMaxLogTail) : kDefaultLogTail;
  const std::streamoff start = size > tail ? size - tail : 0;
  in.seekg(start);
  std::string text(static_cast<size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  log->set_text(text);
  log->set_truncated(start > 0);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::Job>* writer) {
  grpc::Status status;
  const auto who = Admit(*context, &status);
  if (!who) return status;
  {
    std::lock_guard lock(watch_mutex_);
    if (watches_[who->name] >= kMaxWatchesPerUser || total_watches_ >= kMaxWatches) {
      if (watches_[who->name] == 0) watches_.erase(who->name);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many open WatchJob streams (" +
                                                                    std::to_string(kMaxWatchesPerUser) + " per user, " +
                                                                    std::to_string(kMaxWatches) + " in all)");
    }
    ++watches_[who->name];
    ++total_watches_;
  }
  struct Release {  // the stream's slot, whichever way it ends
    JobServiceImpl* self;
    const std::string& user;
    ~Release() {
      std::lock_guard lock(self->watch_mutex_);
      if (--self->watches_[user] == 0) self->watches_.erase(user);
      --self->total_watches_;
    }
  } release{this, who->name};
  std::tuple<JobState, int64_t, int> shown{JobState::kQueued, -1, -1};  // state, step, attempts
  while (!context->IsCancelled() && !stopping_) {
    const auto record = FindJob(*who, request->id(), &status);
    if (!record) return status;
    v1::Job job;
    ToProto(*record, false, &job);
    const std::tuple<JobState, int64_t, int> now{record->state, job.progress().global_step(), record->attempts};
    if (now != shown) {
      if (!writer->Write(job)) return grpc::Status::OK;  // the client went away
      shown = now;
    }
    if (IsFinished(record->state)) return grpc::Status::OK;
    std::this_thread::sleep_for(options_.watch_poll);
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is stopping");
}

namespace {

// The per-rank families /metrics serves, from the keys of <output.dir>/ranks/rank-R.json
// (worker/train/rank_metrics.h). Only these: a worker cannot add series of its own.
struct RankFamily {
  const char* key;
  const char* name;
  const char* type;
  const char* help;
};
constexpr RankFamily kRankFamilies[] = {
    {"step_seconds", "dpo_rank_step_seconds", "gauge",
     "Mean wall time of an optimizer step on this rank, over its last logging window."},
    {"tokens_per_second", "dpo_rank_tokens_per_second", "gauge",
     "Tokens (both sequences of each pair) this rank processed per second, over its last logging window."},
    {"comm_seconds", "dpo_rank_comm_seconds", "gauge",
     "Mean seconds per step this rank's gradient communication was in flight (the bucketed all-reduce; "
     "with train.sharding, all-gathers and reduce-scatters)."},
    {"comm_hidden_ratio", "dpo_rank_comm_hidden_ratio", "gauge",
     "Share of dpo_rank_comm_seconds hidden behind compute: 1 - (time the step waited for it after "
     "backward) / (time in flight)."},
    {"peak_memory_bytes", "dpo_rank_peak_memory_bytes", "gauge",
     "Peak memory of this rank: the CUDA allocator's peak on a GPU, the process's peak resident set on a CPU."},
    {"skipped_steps_total", "dpo_rank_skipped_steps_total", "counter",
     "Optimizer steps this rank skipped for a non-finite loss or gradient, over the whole run."},
};

}  // namespace

std::string RenderJobMetrics(JobStore& store, JobRunner& runner) {
  std::ostringstream out;
  out << "# HELP dpo_jobs Jobs known to the coordinator, by state.\n# TYPE dpo_jobs gauge\n";
  for (const auto& [state, count] : store.CountByState()) {
    out << "dpo_jobs{state=\"" << ToString(state) << "\"} " << count << "\n";
  }
  // Per running job, its last reported train metrics; one family per metric name, each with
  // the HELP and TYPE lines Prometheus's format asks for (promtool checks them).
  struct Family {
    std::string help;
    std::string type = "gauge";
    std::vector<std::string> samples;
  };
  std::map<std::string, Family> families;
  for (const JobRecord& record : store.List(0, JobState::kRunning)) {
    const auto progress = runner.Progress(record);
    // job_id, not job: Prometheus sets `job` to the scrape job's name, and would rename ours.
    const std::string job_labels = "job_id=\"" + std::to_string(record.id) + "\",name=\"" +
                                   PrometheusLabel(ReplyText(record.name, kMaxListedText)) + "\"";
    const std::string labels = "{" + job_labels + "}";
    Family& step = families["dpo_train_global_step"];
    step.help = "Optimizer steps the running job has done.";
    step.samples.push_back(labels + " " + std::to_string(progress ? progress->step : 0));
    // Each rank's own figures, labelled by rank as well.
    for (const RankStatus& rank : runner.RankProgress(record.id)) {
      const std::string rank_labels = "{" + job_labels + ",rank=\"" + std::to_string(rank.rank) + "\"}";
      Family& rank_step = families["dpo_rank_global_step"];
      rank_step.help = "Optimizer steps done when this rank last logged (a rank that lags or stalls shows here).";
      rank_step.samples.push_back(rank_labels + " " + std::to_string(rank.step));
      for (const RankFamily& known : kRankFamilies) {
        const auto value = rank.metrics.find(known.key);
        if (value == rank.metrics.end()) continue;
        std::ostringstream sample;
        sample.precision(17);
        sample << rank_labels << " " << value->second;
        Family& family = families[known.name];
        family.help = known.help;
        family.type = known.type;
        family.samples.push_back(sample.str());
      }
    }
    if (!progress) continue;
    for (const auto& [key, value] : progress->metrics) {
      std::ostringstream sample;
      sample.precision(17);
      sample << labels << " " << value;
      Family& family = families["dpo_train_" + PrometheusName(key)];
      family.help = "The running job's last logged train metric \"" + key + "\" (TRL's name).";
      family.samples.push_back(sample.str());
    }
  }
  for (const auto& [name, family] : families) {
    out << "# HELP " << name << " " << family.help << "\n# TYPE " << name << " " << family.type << "\n";
    for (const std::string& sample : family.samples) out << name << sample << "\n";
  }
  return out.str();
}

}  // namespace dpo
