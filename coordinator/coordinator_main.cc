// dpo-coordinator: the job service. Accepts job specs over gRPC (dpoctl is its client), keeps
// them in SQLite, runs each as a worker group (dpo-worker, or an mpirun of them), and serves
// Prometheus metrics.
//   dpo-coordinator [--listen ADDR] [--db FILE] [--work-dir DIR] [--tls-cert PEM --tls-key PEM] ...
//   dpo-coordinator token add NAME [--admin] | token list | token revoke NAME  [--db FILE]
// (--help lists every flag and its default.) Exit status (docs/cli.md): 0 when stopped by SIGINT
// or SIGTERM, or the token command is done; 1 when the database, a TLS file or the address
// cannot be used, or a token command fails (a name taken, no token to revoke); 2 on bad usage,
// including a --listen address other than loopback without a user token and TLS.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/util/cli.h"
#include "common/util/path_util.h"
#include "coordinator/job_runner.h"
#include "coordinator/job_service.h"
#include "coordinator/job_store.h"
#include "coordinator/metrics_http.h"
#include "coordinator/token_store.h"

namespace {

std::string BesideThisProgram(const std::string& name) {
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return name;
  return dpo::JoinPath(dpo::DirName(std::string(self, static_cast<size_t>(n))), name);
}

std::vector<std::string> Words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// Whether gRPC address `listen` (host:port, [v6]:port or unix:path) is reachable from this
// machine only.
bool IsLoopback(const std::string& listen) {
  if (listen.starts_with("unix:")) return true;
  const std::string host =
      listen.starts_with("[") ? listen.substr(1, listen.find(']') - 1) : listen.substr(0, listen.rfind(':'));
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

// The `token` commands: `add` prints the new token (shown this once; only its hash is kept),
// `list` the names (admins marked), `revoke` fails when the name has no token.
struct TokenCommand {
  CLI::App* add = nullptr;
  CLI::App* list = nullptr;  // neither: revoke
  std::string name;
  bool admin = false;

  int Run(const std::string& db) const {
    dpo::TokenStore tokens(db);
    if (add->parsed()) {
      std::printf("%s\n", tokens.Add(name, admin).c_str());
    } else if (list->parsed()) {
      for (const dpo::TokenInfo& t : tokens.List()) std::printf("%s%s\n", t.name.c_str(), t.admin ? " admin" : "");
    } else if (!tokens.Revoke(name)) {
      std::fprintf(stderr, "dpo-coordinator: token revoke: no token for \"%s\"\n", name.c_str());
      return dpo::cli::kExitFailure;
    }
    return dpo::cli::kExitOk;
  }
};

}  // namespace

int main(int argc, char** argv) {
  dpo::cli::App app(
      "The job service: accepts job specs over gRPC (dpoctl is its client), keeps them in\n"
      "SQLite, runs each as a worker group (dpo-worker, or an mpirun of them), and serves\n"
      "Prometheus metrics.",
      "dpo-coordinator");
  app.footer(
      "Runs until SIGINT or SIGTERM; running worker groups are then sent SIGTERM (they checkpoint)\n"
      "and requeued, to resume from their latest checkpoint when the coordinator starts again;\n"
      "a group still running --stop-grace-ms later is left running and adopted by the next\n"
      "coordinator. One coordinator per database: a second one on the same --db refuses to start.\n"
      "In-flight calls get 1 s to finish, so that the coordinator is gone within 10 s of SIGTERM.\n"
      "Exit status: 0 stopped by a signal; 1 the database, a TLS file or the address cannot be used;\n"
      "2 bad usage (a non-loopback --listen without a user token and TLS included).");
  // Flags after a subcommand's own go to the app: `token list --db FILE`.
  app.fallthrough();
  app.require_subcommand(0, 1);
  std::string listen = "127.0.0.1:50051", db = "dpo-coordinator.db", work_dir = "dpo-jobs";
  std::string metrics_listen = "127.0.0.1:9464", tls_cert, tls_key;
  dpo::JobRunnerOptions runner_options;
  dpo::JobServiceOptions service_options;
  runner_options.worker_binary = BesideThisProgram("dpo-worker");
  runner_options.prepare_binary = BesideThisProgram("dpo-prepare-job");
  int64_t retry_backoff_ms = runner_options.retry_backoff.count();
  int64_t prepare_timeout_ms = runner_options.prepare_timeout.count();
  int64_t stop_grace_ms = runner_options.stop_grace.count();
  double gpu_memory_gib = 0;
  std::string launcher;

  app.add_option("--db", db, "SQLite job database, also holding the users' token hashes")->capture_default_str();
  CLI::Option* tls_cert_option =
      app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve gRPC over TLS (with --tls-key)");
  CLI::Option* tls_key_option = app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  tls_cert_option->needs(tls_key_option);
  tls_key_option->needs(tls_cert_option);
  // The serving flags; the token commands refuse them.
  const std::vector<CLI::Option*> serving = {
      app.add_option("--listen", listen,
                     "gRPC address (port 0 picks a free one). Any other than loopback needs a token\n"
                     "(token add) and --tls-cert/--tls-key")
          ->capture_default_str(),
      app.add_option("--work-dir", work_dir, "per-job spec and log folders")->capture_default_str(),
      app.add_option("--metrics-listen", metrics_listen, "Prometheus /metrics, civetweb syntax (port 0 picks one)")
          ->capture_default_str(),
      tls_cert_option,
      tls_key_option,
      app.add_flag("--require-auth", service_options.require_auth,
                   "every call needs a token, even while none exists (default: needed as soon as\n"
                   "one exists; until then every caller on loopback is the admin)"),
      app.add_option("--read-root", service_options.roots.read,
                     "a directory specs may read data, models and tokenizers from; repeatable\n"
                     "(default: none, reads unconfined)")
          ->allow_extra_args(false)
          ->take_all(),
      app.add_option("--write-root", service_options.roots.write,
                     "every output.dir and data.prepared_dir must be in <DIR>/<user> (an admin's: in\n"
                     "DIR) (default: none, writes unconfined)"),
      app.add_option("--max-queued-per-user", service_options.max_queued_per_user,
                     "queued jobs per user; more are RESOURCE_EXHAUSTED")
          ->check(dpo::cli::Integer(1))
          ->capture_default_str(),
      app.add_option("--max-rps-per-user", service_options.max_rps_per_user,
                     "calls per second per user, bursts of twice that; more are RESOURCE_EXHAUSTED\n"
                     "(0: no limit)")
          ->check(dpo::cli::Real(0, true))
          ->capture_default_str(),
      app.add_option("--worker", runner_options.worker_binary,
                     "dpo-worker binary (default: the one beside this program)"),
      app.add_option("--launcher", launcher, "words put before the worker, e.g. \"mpirun -np 8\" (default: none)"),
      app.add_option("--slots", runner_options.slots, "jobs run at once, one worker group each")
          ->check(dpo::cli::Integer(1))
          ->capture_default_str(),
      app.add_option("--gpus-per-slot", runner_options.gpus_per_slot,
                     "GPUs of each group: group s gets CUDA_VISIBLE_DEVICES s*N..s*N+N-1\n"
                     "(0: devices untouched)")
          ->check(dpo::cli::Integer(0))
          ->capture_default_str(),
      app.add_option("--ranks-per-group", service_options.ranks_per_group,
                     "ranks of each worker group, as the launcher starts them")
          ->check(dpo::cli::Integer(1))
          ->capture_default_str(),
      app.add_option("--gpu-memory-gib", gpu_memory_gib,
                     "memory of one GPU: a job whose train.sharding mode needs more per rank on\n"
                     "--ranks-per-group ranks is refused at submission (default: no check)")
          ->check(dpo::cli::Real(0, false)),
      app.add_option("--max-retries", runner_options.max_retries,
                     "launches after a failure a retry can fix (a rank killed by a signal, a lost\n"
                     "rank, a collective timeout), per job")
          ->check(dpo::cli::Integer(0))
          ->capture_default_str(),
      app.add_option("--retry-backoff-ms", retry_backoff_ms, "the n-th retry waits this * 2^(n-1)")
          ->check(dpo::cli::Integer(0))
          ->capture_default_str(),
      app.add_option("--prepare-timeout-ms", prepare_timeout_ms,
                     "a job's data preparation is stopped, and the job failed, after this long")
          ->check(dpo::cli::Integer(0))
          ->capture_default_str(),
      app.add_option("--stop-grace-ms", stop_grace_ms,
                     "at shutdown, how long running groups get to checkpoint and exit on SIGTERM;\n"
                     "those still running are left to the next coordinator")
          ->check(dpo::cli::Integer(0))
          ->capture_default_str(),
  };

  CLI::App* token =
      app.add_subcommand("token", "the service's users, in --db: token add NAME [--admin] | list | revoke NAME");
  token->require_subcommand(1);
  token->footer(
      "Exit status: 0 done; 1 the database cannot be used, the name is taken or not a valid\n"
      "name, or it has no token to revoke; 2 bad usage.");
  for (CLI::Option* option : serving) token->excludes(option);
  TokenCommand command;
  command.add = token->add_subcommand("add", "prints a new bearer token for NAME, once (only its SHA-256 is stored)");
  command.add->add_option("NAME", command.name, "the user")->required();
  command.add->add_flag("--admin", command.admin, "the user may see and cancel every user's jobs");
  command.list = token->add_subcommand("list", "the users, admins marked");
  CLI::App* revoke = token->add_subcommand("revoke", "removes NAME's token");
  revoke->add_option("NAME", command.name, "the user")->required();
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  if (token->parsed()) {
    try {
      return command.Run(db);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dpo-coordinator: %s\n", e.what());
      return dpo::cli::kExitFailure;
    }
  }
  runner_options.work_dir = work_dir;
  runner_options.launcher = Words(launcher);
  runner_options.retry_backoff = std::chrono::milliseconds(retry_backoff_ms);
  runner_options.prepare_timeout = std::chrono::milliseconds(prepare_timeout_ms);
  runner_options.stop_grace = std::chrono::milliseconds(stop_grace_ms);
  if (gpu_memory_gib > 0) service_options.gpu_memory_gib = gpu_memory_gib;

  // Signals are taken by sigwait below, on this thread: block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  try {
    dpo::JobStore store(db);
    dpo::TokenStore tokens(db);
    if (!IsLoopback(listen)) {
      // Reachable from other machines: never the open single-user mode, never tokens in clear.
      if (!tokens.Any() || tls_cert.empty()) {
        std::fprintf(stderr,
                     "dpo-coordinator: --listen %s is not a loopback address: it needs a "
                     "user token (dpo-coordinator token add NAME) and --tls-cert/--tls-key\n",
                     listen.c_str());
        return dpo::cli::kExitUsage;
      }
      service_options.require_auth = true;
    }
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
    if (!tls_cert.empty()) {
      grpc::SslServerCredentialsOptions tls;
      tls.pem_key_cert_pairs.push_back({dpo::ReadWholeFile(tls_key), dpo::ReadWholeFile(tls_cert)});
      credentials = grpc::SslServerCredentials(tls);
    }
    dpo::JobRunner runner(store, runner_options);
    dpo::JobServiceImpl service(store, runner, tokens, service_options);
    dpo::MetricsHttpServer metrics(metrics_listen, [&] { return dpo::RenderJobMetrics(store, runner); });
    int port = 0;
    grpc::EnableDefaultHealthCheckService(true);  // grpc.health.v1, unauthenticated (probes)
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(listen, credentials, &port);
    builder.RegisterService(&service);
    // Bounded: calls past 256 threads get RESOURCE_EXHAUSTED instead of a thread each, and no
    // request is bigger than a 1 MiB spec and its envelope.
    grpc::ResourceQuota quota("dpo-coordinator");
    quota.SetMaxThreads(256);
    builder.SetResourceQuota(quota);
    // One completion queue with one or two polling threads (gRPC's default is a queue per core):
    // on a small machine fewer threads contending for the cores halved GetJob's p99 under load
    // (bench/README.md). Handlers still get a thread each, up to the quota above.
    builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
    builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
    builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
    builder.SetMaxReceiveMessageSize(2 << 20);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || port == 0) {
      std::fprintf(stderr, "dpo-coordinator: cannot listen on %s\n", listen.c_str());
      return dpo::cli::kExitFailure;
    }
    std::printf("dpo-coordinator: grpc port %d, metrics port %d\n", port, metrics.port());
    std::fflush(stdout);
    int signal = 0;
    sigwait(&stop_signals, &signal);
    std::printf("dpo-coordinator: %s, stopping\n", strsignal(signal));
    std::fflush(stdout);
    service.Stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-coordinator: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
  return dpo::cli::kExitOk;
}
