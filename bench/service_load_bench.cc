// service_load_bench: N concurrent clients, each on its own channel (its own TLS connection),
// call one JobService method for a while; prints one JSON line with the sustained rate and the
// latency percentiles. Driven by service_load_bench.py, which starts the coordinator, fills its
// job table and makes the certificate and the token.
//   service_load_bench --server ADDR --ca-cert PEM --token TOKEN --method get|list|submit
//                      [--clients 64] [--seconds 5] [--jobs 10000] [--spec FILE] [--rate R]
// Exit status (docs/cli.md): 0 when no call failed, 1 when one did (the first error is printed)
// or a file cannot be read, 2 on bad usage.
// get: GetJob of a random id in 1..jobs. list: ListJobs pages of 50, following next_page_token
// (from the first page again after the last). submit: SubmitJob of FILE with "@N@" replaced by a
// number unique to the call (its output directory).
//
// Load model. Without --rate each client is closed-loop: it has one call in flight and starts
// the next as soon as the reply arrives, so the rate is the most the service sustains. With
// --rate R the load is open-loop: call k is scheduled at start + k/R on client k mod N, whatever
// the state of earlier calls (HTTP/2 multiplexes them on the client's connection), and its
// latency counts from that scheduled time, so a stalled server cannot hide its queue
// (no coordinated omission).
//
// The clients are driven by the asynchronous gRPC API from two threads (one schedules, one
// completes), as load generators such as ghz do, rather than by a thread per client: on this
// 2-core machine 64 blocking client threads take the cores from the server they measure, and
// their run-queue waits, not the server, made the tail.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/util/cli.h"
#include "common/util/path_util.h"
#include "dpo/v1/job_service.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace v1 = dpo::v1;

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// One client: its own connection and, for ListJobs, where its listing is.
struct Client {
  std::unique_ptr<v1::JobService::Stub> stub;
  std::mt19937_64 random;
  std::string page_token;
};

// One call in flight; owned by the completion queue until its tag comes back.
struct Call {
  int client = 0;
  Clock::time_point start;
  grpc::ClientContext context;
  grpc::Status status;
  v1::Job job;
  v1::ListJobsResponse page;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::Job>> job_reader;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ListJobsResponse>> page_reader;
};

class LoadRun {
 public:
  // `jobs`: GetJob asks for ids in 1..jobs; `spec`: SubmitJob's template ("" for the others).
  LoadRun(const std::string& server, const std::string& ca_cert, const std::string& token, std::string method,
          int clients, int64_t jobs, std::string spec)
      : method_(std::move(method)), spec_(std::move(spec)), bearer_("Bearer " + token), jobs_(jobs) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = dpo::ReadWholeFile(ca_cert);
    for (int c = 0; c < clients; ++c) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
      auto channel = grpc::CreateCustomChannel(server, grpc::SslCredentials(tls), args);
      channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
      clients_.push_back({v1::JobService::NewStub(channel), std::mt19937_64(c), ""});
    }
  }

  // Runs for `seconds`, open-loop at `rate` calls/s when rate > 0, else closed-loop.
  void Run(double seconds, double rate) {
    const Clock::time_point begin = Clock::now();
    end_ = begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    closed_loop_ = rate <= 0;
    std::thread completer([this] { Complete(); });
    if (closed_loop_) {
      for (int c = 0; c < static_cast<int>(clients_.size()); ++c) Start(c, Clock::now());
    } else {
      const auto interval = std::chrono::duration<double>(1.0 / rate);
      for (int64_t k = 0;; ++k) {
        const Clock::time_point at = begin + std::chrono::duration_cast<Clock::duration>(interval * k);
        if (at >= end_) break;
        std::this_thread::sleep_until(at);
        Start(static_cast<int>(k % clients_.size()), at);
      }
    }
    scheduling_done_ = true;
    if (in_flight_.load() == 0) ShutdownOnce();  // else the last completion shuts it down
    completer.join();
    elapsed_ = std::chrono::duration<double>(std::max(Clock::now(), end_) - begin).count();
  }

  void Report() {
    std::sort(latencies_ms_.begin(), latencies_ms_.end());
    const auto at = [&](double q) {
      return latencies_ms_.empty()
                 ? 0.0
                 : latencies_ms_[std::min(latencies_ms_.size() - 1, size_t(q * latencies_ms_.size()))];
    };
    std::printf(
        "{\"method\": \"%s\", \"paced\": %s, \"clients\": %zu, \"calls\": %zu, \"errors\": %lld, "
        "\"per_second\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f}\n",
        method_.c_str(), closed_loop_ ? "false" : "true", clients_.size(), latencies_ms_.size(),
        static_cast<long long>(errors_), latencies_ms_.size() / elapsed_, at(0.50), at(0.99));
  }

  int64_t errors() const { return errors_; }

 private:
  void Start(int c, Clock::time_point start) {
    Client& client = clients_[c];
    Call* call = new Call;  // deleted by Complete() when its tag comes back
    call->client = c;
    call->start = start;
    call->context.AddMetadata("authorization", bearer_);
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ++in_flight_;
    if (method_ == "get") {
      v1::GetJobRequest request;
      request.set_id(static_cast<int64_t>(client.random() % jobs_) + 1);
      call->job_reader = client.stub->AsyncGetJob(&call->context, request, &queue_);
      call->job_reader->Finish(&call->job, &call->status, call);
    } else if (method_ == "list") {
      v1::ListJobsRequest request;
      request.set_page_size(50);
      request.set_page_token(client.page_token);
      call->page_reader = client.stub->AsyncListJobs(&call->context, request, &queue_);
      call->page_reader->Finish(&call->page, &call->status, call);
    } else {
      v1::SubmitJobRequest request;
      request.set_spec_yaml(Replace(spec_, "@N@", std::to_string(next_submit_++)));
      call->job_reader = client.stub->AsyncSubmitJob(&call->context, request, &queue_);
      call->job_reader->Finish(&call->job, &call->status, call);
    }
  }

  // Both threads may see the last call finish; the queue is shut down once.
  void ShutdownOnce() {
    if (!shut_down_.exchange(true)) queue_.Shutdown();
  }

  // The completion thread: records each finished call and, closed-loop, starts the client's next.
  void Complete() {
    void* tag = nullptr;
    bool ok = false;
    while (queue_.Next(&tag, &ok)) {
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      const Clock::time_point now = Clock::now();
      if (!call->status.ok()) {
        if (errors_++ == 0) std::fprintf(stderr, "first error: %s\n", call->status.error_message().c_str());
      } else {
        latencies_ms_.push_back(std::chrono::duration<double, std::milli>(now - call->start).count());
        if (method_ == "list") clients_[call->client].page_token = call->page.next_page_token();
      }
      if (closed_loop_ && now < end_) Start(call->client, now);
      if (--in_flight_ == 0 && scheduling_done_) ShutdownOnce();
    }
  }

  std::string method_, spec_, bearer_;
  int64_t jobs_ = 0;
  std::vector<Client> clients_;
  grpc::CompletionQueue queue_;
  Clock::time_point end_;
  bool closed_loop_ = true;
  std::atomic<bool> scheduling_done_{false}, shut_down_{false};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> next_submit_{0};
  // Touched only by the completion thread (and by Report after it has joined).
  std::vector<double> latencies_ms_;
  int64_t errors_ = 0;
  double elapsed_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  dpo::cli::App app(
      "N concurrent clients, each on its own TLS connection, call one JobService method for a\n"
      "while; prints one JSON line with the sustained rate and the latency percentiles.",
      "service_load_bench");
  app.footer(
      "Exit status: 0 no call failed; 1 a call failed (the first error is on stderr) or a file\n"
      "cannot be read; 2 bad usage.");
  std::string server, ca_cert, token, method, spec_path;
  int clients = 64;
  double seconds = 5, rate = 0;
  int64_t jobs = 10000;
  app.add_option("--server", server, "the coordinator, HOST:PORT")->required();
  app.add_option("--ca-cert", ca_cert, "the PEM certificate the coordinator's TLS is trusted by")->required();
  app.add_option("--token", token, "the bearer token of every call")->required();
  app.add_option("--method", method,
                 "get: GetJob of a random id in 1..--jobs; list: ListJobs pages of 50, following\n"
                 "next_page_token; submit: SubmitJob of --spec")
      ->required()
      ->check(CLI::IsMember({"get", "list", "submit"}));
  app.add_option("--clients", clients, "concurrent clients")->check(dpo::cli::Integer(1))->capture_default_str();
  app.add_option("--seconds", seconds, "how long the calls go on")
      ->check(dpo::cli::Real(0, false))
      ->capture_default_str();
  app.add_option("--jobs", jobs, "jobs in the coordinator's table")
      ->check(dpo::cli::Integer(1, INT64_MAX))
      ->capture_default_str();
  app.add_option("--spec", spec_path, "submit's spec, \"@N@\" replaced by a number unique to the call");
  app.add_option("--rate", rate, "calls/s, open-loop (default: closed-loop, one call in flight per client)")
      ->check(dpo::cli::Real(0, false));
  if (const auto exit = dpo::cli::Parse(app, argc, argv)) return *exit;
  try {
    LoadRun run(server, ca_cert, token, method, clients, jobs, spec_path.empty() ? "" : dpo::ReadWholeFile(spec_path));
    run.Run(seconds, rate);
    run.Report();
    return run.errors() > 0 ? dpo::cli::kExitFailure : dpo::cli::kExitOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "service_load_bench: %s\n", e.what());
    return dpo::cli::kExitFailure;
  }
}
