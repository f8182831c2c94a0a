#include "coordinator/metrics_http.h"

#include <civetweb.h>

#include <cctype>
#include <cstring>

#include "common/util/error.h"

namespace dpo {

MetricsHttpServer::MetricsHttpServer(const std::string& listen, std::function<std::string()> render)
    : render_(std::move(render)) {
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2", nullptr};
  mg_callbacks callbacks{};
  context_ = mg_start(&callbacks, nullptr, options);
  if (context_ == nullptr) Fail("--metrics-listen " + listen, "cannot start the HTTP server");
  mg_set_request_handler(context_, "/metrics", &MetricsHttpServer::Handle, this);
  mg_server_port ports[4];
  if (mg_get_server_ports(context_, 4, ports) > 0) port_ = ports[0].port;
}

MetricsHttpServer::~MetricsHttpServer() { mg_stop(context_); }

int MetricsHttpServer::Handle(mg_connection* connection, void* self) {
  auto* server = static_cast<MetricsHttpServer*>(self);
  const mg_request_info* request = mg_get_request_info(connection);
  if (std::strcmp(request->request_method, "GET") != 0) {
    mg_printf(connection, "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n");
    return 405;
  }
  std::string body;
  int status = 200;
  try {
    body = server->render_();
  } catch (const std::exception& e) {
    status = 500;
    body = std::string("error: ") + e.what() + "\n";
  }
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
            status, status == 200 ? "OK" : "Internal Server Error", body.size());
  mg_write(connection, body.data(), body.size());
  return status;
}

std::string PrometheusName(const std::string& name) {
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name.compare(i, 2, "/s") == 0 && i + 2 == name.size()) {
      out += "_per_second";
      break;
    }
    const auto c = static_cast<unsigned char>(name[i]);
    out += std::isalnum(c) ? static_cast<char>(c) : '_';
  }
  return out;
}

std::string PrometheusLabel(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace dpo
