// dpoctl: the command-line client of dpo-coordinator's JobService.
//   dpoctl [OPTIONS] submit JOB.yaml [--name NAME]
//   dpoctl [OPTIONS] get ID | list [--limit N] | cancel ID | watch ID | logs ID
// OPTIONS, before or after the command: --server HOST:PORT (default $DPO_COORDINATOR, else
// localhost:50051), --ca-cert PEM (speak TLS, trusting this CA), --token-file FILE. The token is
// the first of: --token-file, $DPO_TOKEN, ~/.config/dpo/token; a token file readable by group or
// others is refused, as ssh refuses such a key. With none, calls carry no token (a coordinator in
// single-user mode).
// IDs are whole numbers > 0. Exit status (docs/cli.md): 0 on success (for watch: the job
// succeeded), 1 when the call fails or the watched job failed or was cancelled, 2 on bad usage
// (nothing was sent). Errors go to stderr as "dpoctl: CODE: message".
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "common/util/cli.h"
#include "common/util/error.h"
#include "common/util/path_util.h"
#include "dpo/v1/job_service.grpc.pb.h"

namespace {

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

// Prints the failed call's status; returns the failure exit status.
int Fail(const grpc::Status& status) {
  static constexpr const char* kCodes[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const int code = status.error_code();
  std::fprintf(stderr, "dpoctl: %s: %s\n", code >= 0 && code <= 16 ? kCodes[code] : "ERROR",
               status.error_message().c_str());
  return dpo::cli::kExitFailure;
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

// The commands; each returns the exit status.

int Submit(Client& client, const std::string& path, const std::string& name) {
  dpo::v1::SubmitJobRequest request;
  try {
    request.set_spec_yaml(dpo::ReadWholeFile(path));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpoctl: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
  char cwd[4096];
  const std::string dir = dpo::DirName(path);
  const std::string here = ::getcwd(cwd, sizeof cwd) ? cwd : ".";
  request.set_base_dir(dir.starts_with("/") ? dir : dpo::JoinPath(here, dir.empty() ? "." : dir));
  request.set_name(name.empty() ? path : name);
  dpo::v1::Job job;
  const auto status = client.Call(&dpo::v1::JobService::Stub::SubmitJob, request, &job);
  if (!status.ok()) return Fail(status);
  std::printf("%lld\n", static_cast<long long>(job.id()));
  return dpo::cli::kExitOk;
}

int Logs(Client& client, int64_t id) {
  dpo::v1::GetJobLogRequest request;
  request.set_id(id);
  dpo::v1::JobLog log;
  const auto status = client.Call(&dpo::v1::JobService::Stub::GetJobLog, request, &log);
  if (!status.ok()) return Fail(status);
  if (log.truncated()) std::fputs("[... earlier output not shown]\n", stdout);
  std::fwrite(log.text().data(), 1, log.text().size(), stdout);
  return dpo::cli::kExitOk;
}

// get, or cancel when `cancel`: prints the job.
int GetOrCancel(Client& client, int64_t id, bool cancel) {
  dpo::v1::Job job;
  grpc::Status status;
  if (cancel) {
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
  return dpo::cli::kExitOk;
}

// Prints a line per update; succeeds only when the job has.
int Watch(Client& client, int64_t id) {
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
  return last.state() == dpo::v1::JOB_STATE_SUCCEEDED ? dpo::cli::kExitOk : dpo::cli::kExitFailure;
}

// The newest `limit` jobs, page after page.
int List(Client& client, int limit) {
  std::printf("%-6s %-10s %-12s %s\n", "ID", "STATE", "STEP", "NAME");
  dpo::v1::ListJobsRequest request;
  for (int shown = 0; shown < limit;) {
    request.set_page_size(std::min(limit - shown, 100));
    dpo::v1::ListJobsResponse response;
    const auto status = client.Call(&dpo::v1::JobService::Stub::ListJobs, request, &response);
    if (!status.ok()) return Fail(status);
    for (const auto& job : response.jobs()) {
      const std::string step =
          std::to_string(job.progress().global_step()) + "/" + std::to_string(job.progress().total_steps());
      std::printf("%-6lld %-10s %-12s %s\n", static_cast<long long>(job.id()), StateName(job.state()).c_str(),
                  step.c_str(), job.name().c_str());
    }
    shown += response.jobs_size();
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  return dpo::cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  dpo::cli::App app("The command-line client of dpo-coordinator's JobService.", "dpoctl");
  app.footer(
      "The token comes from --token-file, else $DPO_TOKEN, else ~/.config/dpo/token (which must\n"
      "not be readable by group or others); with none, calls carry no token (a coordinator in\n"
      "single-user mode). Errors go to stderr as \"dpoctl: CODE: message\".\n"
      "Exit status: 0 the call succeeded (watch: the job succeeded); 1 the call failed, or the\n"
      "watched job failed or was cancelled; 2 bad usage.");
  // The options above may also come after the command: `dpoctl list --server HOST:PORT`.
  app.fallthrough();
  app.require_subcommand(1);
  std::string server = "localhost:50051", ca_cert, token_file;
  app.add_option("--server", server, "the coordinator, HOST:PORT")->envname("DPO_COORDINATOR")->capture_default_str();
  app.add_option("--ca-cert", ca_cert, "speak TLS, trusting this CA's PEM certificate");
  app.add_option("--token-file", token_file, "the file holding the bearer token");

  std::string spec_path, name;
  int64_t id = 0;
  int limit = 100;
  CLI::App* submit = app.add_subcommand("submit", "queues JOB.yaml; prints the job's id");
  submit->add_option("JOB.yaml", spec_path, "the job spec")->required();
  submit->add_option("--name", name, "the job's name (default: the spec's path)");
  const auto add_id_command = [&](const char* command, const char* description) {
    CLI::App* sub = app.add_subcommand(command, description);
    sub->add_option("ID", id, "the job's id")->required()->check(dpo::cli::Integer(1, INT64_MAX));
    return sub;
  };
  CLI::App* get = add_id_command("get", "prints the job");
  CLI::App* cancel = add_id_command("cancel", "cancels the job; prints it");
  CLI::App* watch = add_id_command("watch", "prints a line per update until the job has finished");
  CLI::App* logs = add_id_command("logs", "prints the end of the job's worker log");
  CLI::App* list = app.add_subcommand("list", "the newest jobs");
  list->add_option("--limit", limit, "how many")->check(dpo::cli::Integer(1))->capture_default_str();
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;

  std::unique_ptr<Client> client;
  try {
    client = std::make_unique<Client>(server, ca_cert, FindToken(token_file));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpoctl: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
  if (submit->parsed()) return Submit(*client, spec_path, name);
  if (get->parsed() || cancel->parsed()) return GetOrCancel(*client, id, cancel->parsed());
  if (watch->parsed()) return Watch(*client, id);
  if (logs->parsed()) return Logs(*client, id);
  return List(*client, limit);
}
