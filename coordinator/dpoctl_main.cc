// dpoctl: the command-line client of dpo-coordinator's JobService.
//   dpoctl [OPTIONS] submit JOB.yaml [--name NAME]
//   dpoctl [OPTIONS] get ID | list [--limit N] | cancel ID | watch ID | logs ID
// OPTIONS: --server HOST:PORT (default $DPO_COORDINATOR, else localhost:50051), --ca-cert PEM
// (speak TLS, trusting this CA), --token-file FILE. The token is the first of: --token-file,
// $DPO_TOKEN, ~/.config/dpo/token; a token file readable by group or others is refused, as ssh
// refuses such a key. With none, calls carry no token (a coordinator in single-user mode).
// Exit status: 0 on success (for watch: the job succeeded), 1 when the call fails or the watched
// job failed or was cancelled, 2 on bad usage. Errors go to stderr as "dpoctl: CODE: message".
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/util/error.h"
#include "common/util/path_util.h"
#include "dpo/v1/job_service.grpc.pb.h"

namespace {

constexpr const char* kUsage =
    "usage: dpoctl [OPTIONS] submit JOB.yaml [--name NAME]\n"
    "       dpoctl [OPTIONS] get ID | list [--limit N] | cancel ID | watch ID | logs ID\n"
    "OPTIONS: --server HOST:PORT (default $DPO_COORDINATOR, else localhost:50051)\n"
    "         --ca-cert PEM (TLS, trusting this CA)  --token-file FILE\n"
    "The token comes from --token-file, else $DPO_TOKEN, else ~/.config/dpo/token (which must\n"
    "not be readable by group or others). list shows the newest N jobs (default 100).\n";

// "queued", "running", ...: the proto's own value name without its prefix, lower-cased.
std::string StateName(dpo::v1::JobState state) {
  std::string name = dpo::v1::JobState_Name(state);
  if (name.starts_with("JOB_STATE_")) name.erase(0, std::strlen("JOB_STATE_"));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return name.empty() ? "unknown" : name;
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
  std::printf("id: %lld\nname: %s\nowner: %s\nstate: %s\noutput_dir: %s\ndata_prepared: %s\nattempts: %d\n",
              static_cast<long long>(job.id()), job.name().c_str(), job.owner().c_str(), StateName(job.state()).c_str(),
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

// The token in `path`, trimmed; throws when the file is readable by group or others, or empty.
std::string ReadTokenFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) dpo::Fail(path, "cannot read the token file");
  if (st.st_mode & (S_IRGRP | S_IROTH)) {
    dpo::Fail(path, "the token file is readable by group or others; chmod 600 it");
  }
  std::string token = dpo::ReadWholeFile(path);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) dpo::Fail(path, "the token file is empty");
  return token;
}

// --token-file, else $DPO_TOKEN, else ~/.config/dpo/token when it exists; "" when none.
std::string FindToken(const std::string& token_file) {
  if (!token_file.empty()) return ReadTokenFile(token_file);
  if (const char* env = std::getenv("DPO_TOKEN"); env && *env) return env;
  const char* home = std::getenv("HOME");
  if (!home) return "";
  const std::string config = dpo::JoinPath(home, ".config/dpo/token");
  return ::access(config.c_str(), F_OK) == 0 ? ReadTokenFile(config) : "";
}

class Client {
 public:
  Client(const std::string& server, const std::string& ca_cert, std::string token)
      : stub_(dpo::v1::JobService::NewStub(grpc::CreateChannel(server, Credentials(ca_cert)))),
        token_(std::move(token)) {}
  template <typename Request, typename Response, typename Method>
  grpc::Status Call(Method method, const Request& request, Response* response) {
    grpc::ClientContext context;
    Prepare(&context, std::chrono::seconds(15));
    return ((*stub_).*method)(&context, request, response);
  }
  // WatchJob: `show` gets each update until the job has finished. Returns the call's status.
  template <typename Show>
  grpc::Status Watch(int64_t id, Show show) {
    grpc::ClientContext context;
    Prepare(&context, std::chrono::hours(24 * 365));  // as long as the job runs
    dpo::v1::WatchJobRequest request;
    request.set_id(id);
    auto reader = stub_->WatchJob(&context, request);
    for (dpo::v1::Job job; reader->Read(&job);) show(job);
    return reader->Finish();
  }

 private:
  static std::shared_ptr<grpc::ChannelCredentials> Credentials(const std::string& ca_cert) {
    if (ca_cert.empty()) return grpc::InsecureChannelCredentials();
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = dpo::ReadWholeFile(ca_cert);
    return grpc::SslCredentials(tls);
  }
  void Prepare(grpc::ClientContext* context, std::chrono::seconds timeout) const {
    context->set_deadline(std::chrono::system_clock::now() + timeout);
    if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
  }

  std::unique_ptr<dpo::v1::JobService::Stub> stub_;
  std::string token_;
};

bool ParseId(const std::string& text, int64_t* id) {
  char* end = nullptr;
  *id = std::strtoll(text.c_str(), &end, 10);
  return !text.empty() && *end == '\0' && *id > 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string server = std::getenv("DPO_COORDINATOR") ? std::getenv("DPO_COORDINATOR") : "localhost:50051";
  std::string ca_cert, token_file;
  std::vector<std::string> args(argv + 1, argv + argc);
  while (args.size() >= 2 && (args[0] == "--server" || args[0] == "--ca-cert" || args[0] == "--token-file")) {
    (args[0] == "--server" ? server : args[0] == "--ca-cert" ? ca_cert : token_file) = args[1];
    args.erase(args.begin(), args.begin() + 2);
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::unique_ptr<Client> made;
  try {
    made = std::make_unique<Client>(server, ca_cert, FindToken(token_file));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpoctl: %s\n", e.what());
    return 1;
  }
  Client& client = *made;
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
  if ((command == "get" || command == "cancel") && args.size() == 2 && ParseId(args[1], &id)) {
    dpo::v1::Job job;
    grpc::Status status;
    if (command == "cancel") {
      dpo::v1::CancelJobRequest request;
      request.set_id(id);
      status = client.Call(&dpo::v1::JobService::Stub::CancelJob, request, &job);
    } else {
      dpo::v1::GetJobRequest request;
      request.set_id(id);
      status = client.Call(&dpo::v1::JobService::Stub::GetJob, request, &job);
    }
    if (!status.ok()) return Fail(status);
    PrintJob(job);
    return 0;
  }
  if (command == "watch" && args.size() == 2 && ParseId(args[1], &id)) {
    dpo::v1::Job last;
    const auto status = client.Watch(id, [&](const dpo::v1::Job& job) {
      std::printf("job %lld %s step %lld/%lld loss %.4f acc %.3f\n", static_cast<long long>(id),
                  StateName(job.state()).c_str(), static_cast<long long>(job.progress().global_step()),
                  static_cast<long long>(job.progress().total_steps()), Metric(job, "loss"),
                  Metric(job, "rewards/accuracies"));
      std::fflush(stdout);
      last = job;
    });
    if (!status.ok()) return Fail(status);
    if (!last.error().empty()) std::printf("error: %s\n", last.error().c_str());
    return last.state() == dpo::v1::JOB_STATE_SUCCEEDED ? 0 : 1;
  }
  if (command == "list" && (args.size() == 1 || (args.size() == 3 && args[1] == "--limit"))) {
    const int limit = args.size() == 3 ? std::atoi(args[2].c_str()) : 100;
    if (limit <= 0) {
      std::fputs(kUsage, stderr);
      return 2;
    }
    std::printf("%-6s %-10s %-12s %s\n", "ID", "STATE", "STEP", "NAME");
    dpo::v1::ListJobsRequest request;
    for (int shown = 0; shown < limit;) {  // page after page, newest first
      request.set_page_size(std::min(limit - shown, 100));
      dpo::v1::ListJobsResponse response;
      const auto status = client.Call(&dpo::v1::JobService::Stub::ListJobs, request, &response);
      if (!status.ok()) return Fail(status);
      for (const auto& job : response.jobs()) {
        const std::string step = std::to_string(job.progress().global_step()) + "/" +
                                 std::to_string(job.progress().total_steps());
        std::printf("%-6lld %-10s %-12s %s\n", static_cast<long long>(job.id()),
                    StateName(job.state()).c_str(), step.c_str(), job.name().c_str());
      }
      shown += response.jobs_size();
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());
    }
    return 0;
  }
  std::fputs(kUsage, stderr);
  return 2;
}
