// service_load_bench: N concurrent clients, each on its own channel (its own TLS connection),
// call one JobService method as fast as they can for a while; prints one JSON line with the
// sustained rate and the latency percentiles. Driven by service_load_bench.py, which starts the
// coordinator, fills its job table and makes the certificate and the token.
//   service_load_bench --server ADDR --ca-cert PEM --token TOKEN --method get|list|submit
//                      [--clients 64] [--seconds 5] [--jobs 10000] [--spec FILE] [--rate R]
// get: GetJob of a random id in 1..jobs. list: ListJobs pages of 50, following next_page_token
// (from the first page again after the last). submit: SubmitJob of FILE with "@N@" replaced by a
// number unique to the call (its output directory). --rate R: the clients together start R calls
// a second on a fixed schedule, and a call's latency counts from its scheduled start, so time
// spent queued behind a slow call is counted too; without it each client calls back to back.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/model/path_util.h"
#include "dpo/v1/job_service.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags = {{"--clients", "64"}, {"--seconds", "5"}, {"--jobs", "10000"}};
  for (int i = 1; i + 1 < argc; i += 2) flags[argv[i]] = argv[i + 1];
  for (const char* required : {"--server", "--ca-cert", "--token", "--method"}) {
    if (!flags.count(required)) {
      std::fprintf(stderr, "service_load_bench: %s is required (see the header of service_load_bench.cc)\n", required);
      return 2;
    }
  }
  const std::string method = flags["--method"];
  const int clients = std::stoi(flags["--clients"]);
  const int64_t jobs = std::stoll(flags["--jobs"]);
  const auto duration = std::chrono::duration<double>(std::stod(flags["--seconds"]));
  const std::string spec = flags.count("--spec") ? dpo::ReadWholeFile(flags["--spec"]) : "";
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = dpo::ReadWholeFile(flags["--ca-cert"]);
  const std::string bearer = "Bearer " + flags["--token"];
  // Per client: the time between two scheduled calls; zero: back to back.
  const auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
      flags.count("--rate") ? clients / std::stod(flags["--rate"]) : 0.0));

  std::atomic<int64_t> next_submit{0}, errors{0};
  std::vector<std::vector<double>> latencies(clients);  // ms, per client
  std::vector<std::thread> threads;
  const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(duration);
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
      auto stub = dpo::v1::JobService::NewStub(
          grpc::CreateCustomChannel(flags["--server"], grpc::SslCredentials(tls), args));
      std::mt19937_64 random(c);
      std::string page_token;
      Clock::time_point scheduled = Clock::now() + interval * c / clients;  // spread the clients
      while (Clock::now() < end) {
        if (interval.count() > 0) {
          std::this_thread::sleep_until(scheduled);
          scheduled += interval;
        }
        grpc::ClientContext context;
        context.AddMetadata("authorization", bearer);
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        const Clock::time_point start = interval.count() > 0 ? scheduled - interval : Clock::now();
        grpc::Status status;
        if (method == "get") {
          dpo::v1::GetJobRequest request;
          request.set_id(static_cast<int64_t>(random() % jobs) + 1);
          dpo::v1::Job job;
          status = stub->GetJob(&context, request, &job);
        } else if (method == "list") {
          dpo::v1::ListJobsRequest request;
          request.set_page_size(50);
          request.set_page_token(page_token);
          dpo::v1::ListJobsResponse response;
          status = stub->ListJobs(&context, request, &response);
          page_token = response.next_page_token();
        } else {
          dpo::v1::SubmitJobRequest request;
          request.set_spec_yaml(Replace(spec, "@N@", std::to_string(next_submit++)));
          dpo::v1::Job job;
          status = stub->SubmitJob(&context, request, &job);
        }
        if (!status.ok()) {
          if (errors++ == 0) std::fprintf(stderr, "first error: %s\n", status.error_message().c_str());
          continue;
        }
        latencies[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  const auto at = [&](double q) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, size_t(q * all.size()))]; };
  std::printf("{\"method\": \"%s\", \"paced\": %s, \"clients\": %d, \"calls\": %zu, \"errors\": %lld, \"per_second\": %.1f, "
              "\"p50_ms\": %.3f, \"p99_ms\": %.3f}\n",
              method.c_str(), interval.count() > 0 ? "true" : "false", clients, all.size(), static_cast<long long>(errors.load()),
              all.size() / duration.count(), at(0.50), at(0.99));
  return errors.load() > 0 ? 1 : 0;
}
