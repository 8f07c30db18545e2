// Owns: the benchmark's keep-alive CouchDB client (see client.hpp).
#include "tests/bench/client.hpp"

#include <httplib.h>

namespace couchgate::bench {

endpoint endpoint::server_admin() { return endpoint{test::env().host, test::env().port, test::env().user, test::env().password}; }

bench_client::bench_client(std::chrono::seconds read_timeout) : bench_client(endpoint::server_admin(), read_timeout) {}

bench_client::bench_client(const endpoint& to, std::chrono::seconds read_timeout)
    : cli_(to.tls ? std::make_unique<httplib::Client>("https://" + to.host + ":" + std::to_string(to.port))
                  : std::make_unique<httplib::Client>(to.host, to.port)) {
  if (to.tls) cli_->enable_server_certificate_verification(false);
  cli_->set_keep_alive(true);
  cli_->set_tcp_nodelay(true);  // headers and body go out in separate writes: no Nagle stall
  cli_->set_connection_timeout(10);
  cli_->set_read_timeout(static_cast<time_t>(read_timeout.count()));
  cli_->set_write_timeout(60);
  if (!to.user.empty()) cli_->set_basic_auth(to.user.c_str(), to.password.c_str());
}

bench_client::~bench_client() = default;

reply bench_client::call(const char* method, const std::string& target, const std::string* body) {
  httplib::Headers h{{"Accept", "application/json"}};
  if (!cookie_.empty()) h.emplace("Cookie", cookie_);
  session_cookie_.clear();
  httplib::Result res{nullptr, httplib::Error::Unknown};
  std::string m(method);
  if (m == "GET") res = cli_->Get(target.c_str(), h);
  else if (m == "DELETE") res = cli_->Delete(target.c_str(), h);
  else if (m == "PUT") res = cli_->Put(target.c_str(), h, body ? *body : std::string(), "application/json");
  else res = cli_->Post(target.c_str(), h, body ? *body : std::string(), "application/json");
  reply r;
  if (!res) {
    r.raw = httplib::to_string(res.error());
    return r;
  }
  r.status = res->status;
  const auto [first, last] = res->headers.equal_range("Set-Cookie");
  for (auto it = first; it != last; ++it) {
    if (it->second.rfind("AuthSession=", 0) == 0) session_cookie_ = it->second.substr(0, it->second.find(';'));
  }
  r.raw = std::move(res->body);
  r.body = json::parse(r.raw, nullptr, false);
  return r;
}

reply bench_client::get(const std::string& target) { return call("GET", target, nullptr); }
reply bench_client::put(const std::string& target, const std::string& body) { return call("PUT", target, &body); }
reply bench_client::post(const std::string& target, const std::string& body) { return call("POST", target, &body); }
reply bench_client::del(const std::string& target) { return call("DELETE", target, nullptr); }

std::string db_path(const std::string& db) { return "/" + test::enc(db); }

std::string url_with_credentials(std::string base) {
  const auto& e = test::env();
  if (base.empty()) base = e.url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  auto scheme = base.find("://");
  if (e.user.empty() || scheme == std::string::npos) return base;
  return base.substr(0, scheme + 3) + test::enc(e.user) + ":" + test::enc(e.password) + "@" + base.substr(scheme + 3);
}

std::optional<std::uint64_t> doc_count(bench_client& c, const std::string& db) {
  auto r = c.get(db_path(db));
  if (r.status != 200 || !r.body.is_object() || !r.body.contains("doc_count") || !r.body["doc_count"].is_number()) {
    return std::nullopt;
  }
  return r.body["doc_count"].get<std::uint64_t>();
}

std::string seq_param(const json& seq) {
  if (seq.is_string()) return test::enc(seq.get<std::string>());
  if (seq.is_number()) return seq.dump();
  return "0";
}

std::string describe(const reply& r) {
  if (r.status == 0) return "transport failure (" + r.raw + ")";
  std::string body = r.raw.size() > 300 ? r.raw.substr(0, 300) + "..." : r.raw;
  return "HTTP " + std::to_string(r.status) + " " + body;
}

}  // namespace couchgate::bench
