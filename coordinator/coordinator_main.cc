// dpo-coordinator: the job service. Accepts job specs over gRPC (dpoctl is its client), keeps
// them in SQLite, runs each as a worker group (dpo-worker, or an mpirun of them), and serves
// Prometheus metrics.
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "common/config/memory_plan.h"
#include "common/util/path_util.h"
#include "coordinator/job_runner.h"
#include "coordinator/job_service.h"
#include "coordinator/job_store.h"
#include "coordinator/metrics_http.h"
#include "coordinator/token_store.h"

namespace {

constexpr const char* kUsage =
    "usage: dpo-coordinator [--listen ADDR] [--db FILE] [--work-dir DIR] [--metrics-listen PORT]\n"
    "                       [--tls-cert PEM --tls-key PEM] [--require-auth]\n"
    "                       [--read-root DIR]... [--write-root DIR]\n"
    "                       [--max-queued-per-user N] [--max-rps-per-user R]\n"
    "                       [--worker PATH] [--launcher \"mpirun -np N ...\"] [--slots N]\n"
    "                       [--gpus-per-slot N] [--ranks-per-group N] [--gpu-memory-gib G]\n"
    "                       [--max-retries N] [--retry-backoff-ms MS] [--prepare-timeout-ms MS]\n"
    "                       [--stop-grace-ms MS]\n"
    "       dpo-coordinator token add NAME [--admin] | token list | token revoke NAME  [--db FILE]\n"
    "  --listen          gRPC address (default 127.0.0.1:50051; port 0 picks a free one). Any\n"
    "                    other than loopback needs a token (token add) and --tls-cert/--tls-key\n"
    "  --db              SQLite job database, also holding the users' token hashes\n"
    "                    (default dpo-coordinator.db)\n"
    "  --work-dir        per-job spec and log folders (default dpo-jobs)\n"
    "  --metrics-listen  Prometheus /metrics, civetweb syntax (default 127.0.0.1:9464; port 0\n"
    "                    picks one)\n"
    "  --tls-cert, --tls-key  PEM certificate chain and private key: serve gRPC over TLS\n"
    "  --require-auth    every call needs a token, even while none exists (default: needed as\n"
    "                    soon as one exists; until then every caller on loopback is the admin)\n"
    "  --read-root       a directory specs may read data, models and tokenizers from; repeatable\n"
    "                    (default: none, reads unconfined)\n"
    "  --write-root      every output.dir and data.prepared_dir must be in <DIR>/<user> (an\n"
    "                    admin's: in DIR) (default: none, writes unconfined)\n"
    "  --max-queued-per-user  queued jobs per user; more are RESOURCE_EXHAUSTED (default 100)\n"
    "  --max-rps-per-user     calls per second per user, bursts of twice that; more are\n"
    "                    RESOURCE_EXHAUSTED (default 50; 0: no limit)\n"
    "  --worker          dpo-worker binary (default: the one beside this program)\n"
    "  --launcher        words put before the worker, e.g. \"mpirun -np 8\" (default: none)\n"
    "  --slots           jobs run at once, one worker group each (default 1)\n"
    "  --gpus-per-slot   GPUs of each group: group s gets CUDA_VISIBLE_DEVICES s*N..s*N+N-1\n"
    "                    (default 0: devices untouched)\n"
    "  --ranks-per-group ranks of each worker group, as the launcher starts them (default 1)\n"
    "  --gpu-memory-gib  memory of one GPU: a job whose train.sharding mode needs more per rank\n"
    "                    on --ranks-per-group ranks is refused at submission (default: no check)\n"
    "  --max-retries     launches after a failure a retry can fix (a rank killed by a signal,\n"
    "                    a lost rank, a collective timeout), per job (default 2)\n"
    "  --retry-backoff-ms  the n-th retry waits this * 2^(n-1) (default 5000)\n"
    "  --prepare-timeout-ms  a job's data preparation is stopped, and the job failed, after\n"
    "                    this long (default 3600000)\n"
    "  --stop-grace-ms   at shutdown, how long running groups get to checkpoint and exit on\n"
    "                    SIGTERM; those still running are left to the next coordinator\n"
    "                    (default 8000)\n"
    "Runs until SIGINT or SIGTERM; running worker groups are then sent SIGTERM (they checkpoint)\n"
    "and requeued, to resume from their latest checkpoint when the coordinator starts again;\n"
    "a group still running --stop-grace-ms later is left running and adopted by the next\n"
    "coordinator. One coordinator per database: a second one on the same --db refuses to start.\n"
    "In-flight calls get 1 s to finish, so that the coordinator is gone within 10 s of SIGTERM.\n";

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

// The flags the memory check reads are parsed strictly: a threshold misread from "8o" would turn
// away every job, or none. Prints the problem; returns the usage exit status.
// A whole decimal number >= 0 (below 2^31), or nullopt.
std::optional<int64_t> ParseCount(const std::string& value) {
  int64_t n = 0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (error != std::errc() || end != value.data() + value.size() || n < 0 || n > INT32_MAX) return std::nullopt;
  return n;
}

int BadNumber(const std::string& flag, const char* expected, const std::string& value) {
  std::fprintf(stderr, "dpo-coordinator: %s: expected %s, got \"%s\"\n%s", flag.c_str(), expected,
               value.c_str(), kUsage);
  return 2;
}

// Whether gRPC address `listen` (host:port, [v6]:port or unix:path) is reachable from this
// machine only.
bool IsLoopback(const std::string& listen) {
  if (listen.starts_with("unix:")) return true;
  const std::string host = listen.starts_with("[") ? listen.substr(1, listen.find(']') - 1)
                                                   : listen.substr(0, listen.rfind(':'));
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

// dpo-coordinator token add NAME [--admin] | list | revoke NAME, each [--db FILE].
int TokenCommand(std::vector<std::string> args) {
  std::string db = "dpo-coordinator.db";
  bool admin = false;
  for (size_t i = 0; i < args.size();) {
    if (args[i] == "--db" && i + 1 < args.size()) {
      db = args[i + 1];
      args.erase(args.begin() + i, args.begin() + i + 2);
    } else if (args[i] == "--admin") {
      admin = true;
      args.erase(args.begin() + i);
    } else {
      ++i;
    }
  }
  dpo::TokenStore tokens(db);
  if (args.size() == 2 && args[0] == "add") {
    // The token is shown this once; only its hash is kept.
    std::printf("%s\n", tokens.Add(args[1], admin).c_str());
    return 0;
  }
  if (args.size() == 1 && args[0] == "list" && !admin) {
    for (const dpo::TokenInfo& t : tokens.List()) {
      std::printf("%s%s\n", t.name.c_str(), t.admin ? " admin" : "");
    }
    return 0;
  }
  if (args.size() == 2 && args[0] == "revoke" && !admin) {
    if (tokens.Revoke(args[1])) return 0;
    std::fprintf(stderr, "dpo-coordinator: token revoke: no token for \"%s\"\n", args[1].c_str());
    return 1;
  }
  std::fputs(kUsage, stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "token") {
    try {
      return TokenCommand(std::vector<std::string>(argv + 2, argv + argc));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dpo-coordinator: %s\n", e.what());
      return 1;
    }
  }
  std::string listen = "127.0.0.1:50051", db = "dpo-coordinator.db", work_dir = "dpo-jobs";
  std::string metrics_listen = "127.0.0.1:9464", tls_cert, tls_key;
  dpo::JobRunnerOptions runner_options;
  dpo::JobServiceOptions service_options;
  runner_options.worker_binary = BesideThisProgram("dpo-worker");
  runner_options.prepare_binary = BesideThisProgram("dpo-prepare-job");
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (flag == "--require-auth") {
      service_options.require_auth = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "dpo-coordinator: %s needs a value\n%s", flag.c_str(), kUsage);
      return 2;
    }
    const std::string value = argv[++i];
    if (flag == "--listen") listen = value;
    else if (flag == "--db") db = value;
    else if (flag == "--work-dir") work_dir = value;
    else if (flag == "--metrics-listen") metrics_listen = value;
    else if (flag == "--tls-cert") tls_cert = value;
    else if (flag == "--tls-key") tls_key = value;
    else if (flag == "--read-root") service_options.roots.read.push_back(value);
    else if (flag == "--write-root") service_options.roots.write = value;
    else if (flag == "--max-queued-per-user") {
      const auto n = dpo::ParseRanks(value);
      if (!n) return BadNumber(flag, "an integer > 0", value);
      service_options.max_queued_per_user = static_cast<int>(*n);
    } else if (flag == "--max-rps-per-user") {
      char* end = nullptr;
      service_options.max_rps_per_user = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(service_options.max_rps_per_user >= 0)) {
        return BadNumber(flag, "requests per second >= 0", value);
      }
    }
    else if (flag == "--worker") runner_options.worker_binary = value;
    else if (flag == "--launcher") runner_options.launcher = Words(value);
    else if (flag == "--slots") runner_options.slots = std::atoi(value.c_str());
    else if (flag == "--gpus-per-slot") runner_options.gpus_per_slot = std::atoi(value.c_str());
    else if (flag == "--max-retries" || flag == "--retry-backoff-ms" || flag == "--prepare-timeout-ms" ||
             flag == "--stop-grace-ms") {
      const auto n = ParseCount(value);
      if (!n) return BadNumber(flag, "an integer >= 0", value);
      if (flag == "--max-retries") runner_options.max_retries = static_cast<int>(*n);
      else if (flag == "--retry-backoff-ms") runner_options.retry_backoff = std::chrono::milliseconds(*n);
      else if (flag == "--prepare-timeout-ms") runner_options.prepare_timeout = std::chrono::milliseconds(*n);
      else runner_options.stop_grace = std::chrono::milliseconds(*n);
    }
    else if (flag == "--ranks-per-group") {
      const auto ranks = dpo::ParseRanks(value);
      if (!ranks) return BadNumber(flag, "an integer > 0", value);
      service_options.ranks_per_group = *ranks;
    } else if (flag == "--gpu-memory-gib") {
      service_options.gpu_memory_gib = dpo::ParseGib(value);
      if (!service_options.gpu_memory_gib) return BadNumber(flag, "GiB > 0", value);
    } else {
      std::fprintf(stderr, "dpo-coordinator: unknown flag \"%s\"\n%s", flag.c_str(), kUsage);
      return 2;
    }
  }
  runner_options.work_dir = work_dir;
  if (tls_cert.empty() != tls_key.empty()) {
    std::fprintf(stderr, "dpo-coordinator: --tls-cert and --tls-key go together\n%s", kUsage);
    return 2;
  }

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
        std::fprintf(stderr, "dpo-coordinator: --listen %s is not a loopback address: it needs a "
                     "user token (dpo-coordinator token add NAME) and --tls-cert/--tls-key\n", listen.c_str());
        return 2;
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
      return 1;
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
    return 1;
  }
  return 0;
}
