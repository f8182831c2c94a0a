// Serves GET /metrics in the Prometheus text exposition format (version 0.0.4) over civetweb,
// the HTTP server prometheus-cpp uses. The body comes from a callback, run per scrape.
#pragma once

#include <functional>
#include <string>

struct mg_context;
struct mg_connection;

namespace dpo {

class MetricsHttpServer {
 public:
  // listen: civetweb's listening_ports syntax, e.g. "9464" or "127.0.0.1:0" (0 picks a free
  // port; port() tells which). render: the exposition text; it may throw, which answers 500.
  // Throws dpo::Error if the port cannot be bound.
  MetricsHttpServer(const std::string& listen, std::function<std::string()> render);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  static int Handle(mg_connection* connection, void* self);
  std::function<std::string()> render_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

// Prometheus metric-name form of a TRL metric name: "rewards/accuracies" -> "rewards_accuracies",
// "tokens/s" -> "tokens_per_second".
std::string PrometheusName(const std::string& name);

// A label value with \, " and newline escaped.
std::string PrometheusLabel(const std::string& value);

}  // namespace dpo
