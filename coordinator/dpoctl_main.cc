// dpoctl: the command-line client of dpo-coordinator's JobService.
//   dpoctl [--server HOST:PORT] submit JOB.yaml [--name NAME]
//   dpoctl [--server HOST:PORT] get ID | list [--limit N] | cancel ID | watch ID | logs ID
// The server defaults to $DPO_COORDINATOR, else localhost:50051. Exit status: 0 on success (for
// watch: the job succeeded), 1 when the call fails or the watched job failed or was cancelled,
// 2 on bad usage. Errors go to stderr as "dpoctl: CODE: message".
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/model/path_util.h"
#include "common/util/error.h"
#include "dpo/v1/job_service.grpc.pb.h"

namespace {

constexpr const char* kUsage =
    "usage: dpoctl [--server HOST:PORT] submit JOB.yaml [--name NAME]\n"
    "       dpoctl [--server HOST:PORT] get ID | list [--limit N] | cancel ID | watch ID | logs ID\n"
    "The server defaults to $DPO_COORDINATOR, else localhost:50051.\n";

const char* StateName(dpo::v1::JobState state) {
  switch (state) {
    case dpo::v1::JOB_STATE_QUEUED: return "queued";
    case dpo::v1::JOB_STATE_RUNNING: return "running";
    case dpo::v1::JOB_STATE_SUCCEEDED: return "succeeded";
    case dpo::v1::JOB_STATE_FAILED: return "failed";
    case dpo::v1::JOB_STATE_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

bool Finished(dpo::v1::JobState state) {
  return state == dpo::v1::JOB_STATE_SUCCEEDED || state == dpo::v1::JOB_STATE_FAILED ||
         state == dpo::v1::JOB_STATE_CANCELLED;
}

double Metric(const dpo::v1::Job& job, const std::string& key) {
  const auto& m = job.progress().metrics();
  const auto it = m.find(key);
  return it == m.end() ? 0.0 : it->second;
}

void PrintJob(const dpo::v1::Job& job) {
  std::printf("id: %lld\nname: %s\nstate: %s\noutput_dir: %s\ndata_prepared: %s\nattempts: %d\n",
              static_cast<long long>(job.id()), job.name().c_str(), StateName(job.state()),
              job.output_dir().c_str(), job.data_prepared() ? "yes" : "no", job.attempts());
  std::printf("step: %lld/%lld\n", static_cast<long long>(job.progress().global_step()),
              static_cast<long long>(job.progress().total_steps()));
  for (const auto& [key, value] : std::map(job.progress().metrics().begin(), job.progress().metrics().end())) {
    std::printf("  %s: %.6g\n", key.c_str(), value);
  }
  if (Finished(job.state())) std::printf("exit_code: %d\n", job.exit_code());
  if (!job.error().empty()) std::printf("error: %s\n", job.error().c_str());
}

int Fail(const grpc::Status& status) {
  static const char* kCodes[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                 "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int code = status.error_code();
  std::fprintf(stderr, "dpoctl: %s: %s\n", code >= 0 && code <= 16 ? kCodes[code] : "ERROR",
               status.error_message().c_str());
  return 1;
}

class Client {
 public:
  explicit Client(const std::string& server)
      : stub_(dpo::v1::JobService::NewStub(
            grpc::CreateChannel(server, grpc::InsecureChannelCredentials()))) {}
  template <typename Request, typename Response, typename Method>
  grpc::Status Call(Method method, const Request& request, Response* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
    return ((*stub_).*method)(&context, request, response);
  }

 private:
  std::unique_ptr<dpo::v1::JobService::Stub> stub_;
};

bool ParseId(const std::string& text, int64_t* id) {
  char* end = nullptr;
  *id = std::strtoll(text.c_str(), &end, 10);
  return !text.empty() && *end == '\0' && *id > 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string server = std::getenv("DPO_COORDINATOR") ? std::getenv("DPO_COORDINATOR") : "localhost:50051";
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() >= 2 && args[0] == "--server") {
    server = args[1];
    args.erase(args.begin(), args.begin() + 2);
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  Client client(server);
  const std::string command = args[0];
  int64_t id = 0;
  if (command == "submit" && (args.size() == 2 || (args.size() == 4 && args[2] == "--name"))) {
    dpo::v1::SubmitJobRequest request;
    try {
      request.set_spec_yaml(dpo::ReadWholeFile(args[1]));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dpoctl: %s\n", e.what());
      return 1;
    }
    char cwd[4096];
    const std::string dir = dpo::DirName(args[1]);
    const std::string here = ::getcwd(cwd, sizeof cwd) ? cwd : ".";
    request.set_base_dir(dir.starts_with("/") ? dir : dpo::JoinPath(here, dir.empty() ? "." : dir));
    request.set_name(args.size() == 4 ? args[3] : args[1]);
    dpo::v1::Job job;
    const auto status = client.Call(&dpo::v1::JobService::Stub::SubmitJob, request, &job);
    if (!status.ok()) return Fail(status);
    std::printf("%lld\n", static_cast<long long>(job.id()));
    return 0;
  }
  if (command == "logs" && args.size() == 2 && ParseId(args[1], &id)) {
    dpo::v1::GetJobLogRequest request;
    request.set_id(id);
    dpo::v1::JobLog log;
    const auto status = client.Call(&dpo::v1::JobService::Stub::GetJobLog, request, &log);
    if (!status.ok()) return Fail(status);
    if (log.truncated()) std::fputs("[... earlier output not shown]\n", stdout);
    std::fwrite(log.text().data(), 1, log.text().size(), stdout);
    return 0;
  }
  if ((command == "get" || command == "cancel" || command == "watch") && args.size() == 2 &&
      ParseId(args[1], &id)) {
    dpo::v1::Job job;
    if (command == "cancel") {
      dpo::v1::CancelJobRequest request;
      request.set_id(id);
      const auto status = client.Call(&dpo::v1::JobService::Stub::CancelJob, request, &job);
      if (!status.ok()) return Fail(status);
      PrintJob(job);
      return 0;
    }
    dpo::v1::GetJobRequest request;
    request.set_id(id);
    int64_t shown_step = -1;
    std::string shown_state;
    while (true) {
      const auto status = client.Call(&dpo::v1::JobService::Stub::GetJob, request, &job);
      if (!status.ok()) return Fail(status);
      if (command == "get") {
        PrintJob(job);
        return 0;
      }
      if (job.progress().global_step() != shown_step || shown_state != StateName(job.state())) {
        shown_step = job.progress().global_step();
        shown_state = StateName(job.state());
        std::printf("job %lld %s step %lld/%lld loss %.4f acc %.3f\n", static_cast<long long>(id),
                    shown_state.c_str(), static_cast<long long>(shown_step),
                    static_cast<long long>(job.progress().total_steps()), Metric(job, "loss"),
                    Metric(job, "rewards/accuracies"));
        std::fflush(stdout);
      }
      if (Finished(job.state())) {
        if (!job.error().empty()) std::printf("error: %s\n", job.error().c_str());
        return job.state() == dpo::v1::JOB_STATE_SUCCEEDED ? 0 : 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  if (command == "list" && (args.size() == 1 || (args.size() == 3 && args[1] == "--limit"))) {
    dpo::v1::ListJobsRequest request;
    if (args.size() == 3) request.set_limit(std::atoi(args[2].c_str()));
    dpo::v1::ListJobsResponse response;
    const auto status = client.Call(&dpo::v1::JobService::Stub::ListJobs, request, &response);
    if (!status.ok()) return Fail(status);
    std::printf("%-6s %-10s %-12s %s\n", "ID", "STATE", "STEP", "NAME");
    for (const auto& job : response.jobs()) {
      const std::string step = std::to_string(job.progress().global_step()) + "/" +
                               std::to_string(job.progress().total_steps());
      std::printf("%-6lld %-10s %-12s %s\n", static_cast<long long>(job.id()),
                  StateName(job.state()), step.c_str(), job.name().c_str());
    }
    return 0;
  }
  std::fputs(kUsage, stderr);
  return 2;
}
