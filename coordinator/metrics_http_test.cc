#include "coordinator/metrics_http.h"

#include <civetweb.h>
#include <gtest/gtest.h>

#include <stdexcept>

namespace dpo {
namespace {

// A real HTTP GET over a socket (civetweb's client), returning status and body.
std::pair<int, std::string> Get(int port, const std::string& path) {
  char error[256] = {};
  mg_connection* c = mg_download("127.0.0.1", port, 0, error, sizeof error,
                                 "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path.c_str());
  if (c == nullptr) throw std::runtime_error(std::string("GET failed: ") + error);
  const int status = mg_get_response_info(c)->status_code;
  std::string body;
  char buffer[4096];
  for (int n; (n = mg_read(c, buffer, sizeof buffer)) > 0;) body.append(buffer, static_cast<size_t>(n));
  mg_close_connection(c);
  return {status, body};
}

TEST(MetricsHttpTest, ServesTheRenderedTextPerScrape) {
  int scrapes = 0;
  MetricsHttpServer server("127.0.0.1:0", [&] {
    ++scrapes;
    return "dpo_test_scrapes " + std::to_string(scrapes) + "\n";
  });
  ASSERT_GT(server.port(), 0);
  auto [status, body] = Get(server.port(), "/metrics");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(body, "dpo_test_scrapes 1\n");
  EXPECT_EQ(Get(server.port(), "/metrics").second, "dpo_test_scrapes 2\n");
  EXPECT_EQ(Get(server.port(), "/other").first, 404);
}

TEST(MetricsHttpTest, RenderFailureAnswers500) {
  MetricsHttpServer server("127.0.0.1:0", []() -> std::string { throw std::runtime_error("db gone"); });
  auto [status, body] = Get(server.port(), "/metrics");
  EXPECT_EQ(status, 500);
  EXPECT_NE(body.find("db gone"), std::string::npos);
}

TEST(MetricsHttpTest, TrlNamesBecomePrometheusNames) {
  EXPECT_EQ(PrometheusName("rewards/accuracies"), "rewards_accuracies");
  EXPECT_EQ(PrometheusName("tokens/s"), "tokens_per_second");
  EXPECT_EQ(PrometheusName("loss"), "loss");
  EXPECT_EQ(PrometheusLabel("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

}  // namespace
}  // namespace dpo
