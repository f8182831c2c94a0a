// dpo-coordinator: the job service. Accepts job specs over gRPC (dpoctl is its client), keeps
// them in SQLite, runs each as a worker group (dpo-worker, or an mpirun of them), and serves
// Prometheus metrics.
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/config/memory_plan.h"
#include "common/model/path_util.h"
#include "coordinator/job_runner.h"
#include "coordinator/job_service.h"
#include "coordinator/job_store.h"
#include "coordinator/metrics_http.h"

namespace {

constexpr const char* kUsage =
    "usage: dpo-coordinator [--listen ADDR] [--db FILE] [--work-dir DIR] [--metrics-listen PORT]\n"
    "                       [--worker PATH] [--launcher \"mpirun -np N ...\"] [--slots N]\n"
    "                       [--gpus-per-slot N] [--ranks-per-group N] [--gpu-memory-gib G]\n"
    "  --listen          gRPC address (default 0.0.0.0:50051; port 0 picks a free one)\n"
    "  --db              SQLite job database (default dpo-coordinator.db)\n"
    "  --work-dir        per-job spec and log folders (default dpo-jobs)\n"
    "  --metrics-listen  Prometheus /metrics, civetweb syntax (default 9464; 0 picks one)\n"
    "  --worker          dpo-worker binary (default: the one beside this program)\n"
    "  --launcher        words put before the worker, e.g. \"mpirun -np 8\" (default: none)\n"
    "  --slots           jobs run at once, one worker group each (default 1)\n"
    "  --gpus-per-slot   GPUs of each group: group s gets CUDA_VISIBLE_DEVICES s*N..s*N+N-1\n"
    "                    (default 0: devices untouched)\n"
    "  --ranks-per-group ranks of each worker group, as the launcher starts them (default 1)\n"
    "  --gpu-memory-gib  memory of one GPU: a job whose train.sharding mode needs more per rank\n"
    "                    on --ranks-per-group ranks is refused at submission (default: no check)\n"
    "Runs until SIGINT or SIGTERM; running workers are then stopped and relaunched, resuming\n"
    "from their latest checkpoint, when the coordinator starts again.\n";

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
int BadNumber(const std::string& flag, const char* expected, const std::string& value) {
  std::fprintf(stderr, "dpo-coordinator: %s: expected %s, got \"%s\"\n%s", flag.c_str(), expected,
               value.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "0.0.0.0:50051", db = "dpo-coordinator.db", work_dir = "dpo-jobs";
  std::string metrics_listen = "9464";
  dpo::JobRunnerOptions runner_options;
  dpo::JobServiceOptions service_options;
  runner_options.worker_binary = BesideThisProgram("dpo-worker");
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
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
    else if (flag == "--worker") runner_options.worker_binary = value;
    else if (flag == "--launcher") runner_options.launcher = Words(value);
    else if (flag == "--slots") runner_options.slots = std::atoi(value.c_str());
    else if (flag == "--gpus-per-slot") runner_options.gpus_per_slot = std::atoi(value.c_str());
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

  // Signals are taken by sigwait below, on this thread: block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  try {
    dpo::JobStore store(db);
    const int requeued = store.RequeueInterrupted();
    dpo::JobRunner runner(store, runner_options);
    dpo::JobServiceImpl service(store, runner, service_options);
    dpo::MetricsHttpServer metrics(metrics_listen, [&store] { return dpo::RenderJobMetrics(store); });
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || port == 0) {
      std::fprintf(stderr, "dpo-coordinator: cannot listen on %s\n", listen.c_str());
      return 1;
    }
    std::printf("dpo-coordinator: grpc port %d, metrics port %d, %d interrupted job(s) requeued\n",
                port, metrics.port(), requeued);
    std::fflush(stdout);
    int signal = 0;
    sigwait(&stop_signals, &signal);
    std::printf("dpo-coordinator: %s, stopping\n", strsignal(signal));
    std::fflush(stdout);
    server->Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dpo-coordinator: %s\n", e.what());
    return 1;
  }
  return 0;
}
