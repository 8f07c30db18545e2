// Scripted HTTP proxy for hostile-answer tests (see scripted_proxy.hpp).
#include "tests/support/scripted_proxy.hpp"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <strings.h>
#include <set>
#include <stdexcept>
#include <thread>

#include "tests/support/harness.hpp"

namespace couchgate::test {

namespace {

bool iequals(const std::string& a, const char* b) { return strcasecmp(a.c_str(), b) == 0; }
// A longpoll as a normal feed (heartbeat and timeout dropped): the proxy buffers answers, and
// pouchdb-server does not end a longpoll at its `timeout`. An empty answer is held back a
// second (see handle), as a longpoll would be.
std::string as_normal_feed(const std::string& target) {
  auto q = target.find('?');
  if (q == std::string::npos) return target;
  std::string out = target.substr(0, q + 1);
  std::size_t from = q + 1;
  bool first = true;
  while (from <= target.size()) {
    std::size_t amp = target.find('&', from);
    std::string param = target.substr(from, amp == std::string::npos ? std::string::npos : amp - from);
    if (param.rfind("heartbeat=", 0) != 0 && param.rfind("timeout=", 0) != 0 && param.rfind("feed=", 0) != 0 &&
        !param.empty()) {
      if (!first) out += '&';
      out += param;
      first = false;
    }
    if (amp == std::string::npos) break;
    from = amp + 1;
  }
  return out;
}
}  // namespace

struct scripted_proxy::impl {
  httplib::Server server;
  std::thread thread;
  mutable std::mutex mu;
  std::vector<rule> rules;
  std::vector<bool> active;
  std::vector<std::uint64_t> hits;
  std::set<httplib::Client*> in_flight;  // forwards under way, stopped by the destructor
  bool stopping = false;

  // The scripted answer for req, if a rule matches (and counts it).
  // Sleeps up to `ms` in slices, cut short when the proxy stops.
  void pause(int ms) {
    for (int waited = 0; waited < ms; waited += 50) {
      {
        std::lock_guard lk(mu);
        if (stopping) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50, ms - waited)));
    }
  }

  // The scripted answer for req, if a rule matches (and counts it), sent after the rule's delay.
  bool scripted(const httplib::Request& req, const std::string& target, httplib::Response& res) {
    int delay = 0;
    if (!match(req, target, res, delay)) return false;
    pause(delay);
    return true;
  }

  bool match(const httplib::Request& req, const std::string& target, httplib::Response& res, int& delay) {
    std::lock_guard lk(mu);
    for (std::size_t i = 0; i < rules.size(); ++i) {
      rule& r = rules[i];
      if (!active[i] || r.times == 0) continue;
      if (!r.method.empty() && r.method != req.method) continue;
      if (!r.path_contains.empty() && target.find(r.path_contains) == std::string::npos) continue;
      if (!r.body_contains.empty() && req.body.find(r.body_contains) == std::string::npos) continue;
      if (r.times > 0) --r.times;
      ++hits[i];
      res.status = r.status;
      res.set_content(r.body, r.content_type);
      delay = r.delay_ms;
      return true;
    }
    return false;
  }

  void forward(const httplib::Request& req, const std::string& target, httplib::Response& res) {
    httplib::Client cli(env().host, env().port);
    cli.set_connection_timeout(5);
    cli.set_read_timeout(60);
    {
      std::lock_guard lk(mu);
      if (stopping) return;
      in_flight.insert(&cli);
    }
    struct leave {
      impl* self;
      httplib::Client* c;
      ~leave() {
        std::lock_guard lk(self->mu);
        self->in_flight.erase(c);
      }
    } guard{this, &cli};
    httplib::Headers headers;
    for (const auto& [k, v] : req.headers) {
      // Content-Type too: httplib's Put/Post add it from `ct`, and a second copy makes CouchDB
      // (not pouchdb-server) answer 415 "Content-Type must be application/json".
      if (iequals(k, "Host") || iequals(k, "Content-Length") || iequals(k, "Connection") ||
          iequals(k, "Transfer-Encoding") || iequals(k, "Content-Type") || k == "REMOTE_ADDR" ||
          k == "REMOTE_PORT" || k == "LOCAL_ADDR" || k == "LOCAL_PORT") {
        continue;
      }
      headers.emplace(k, v);
    }
    std::string ct = req.get_header_value("Content-Type");
    if (ct.empty()) ct = "application/json";
    httplib::Result up = req.method == "GET"    ? cli.Get(target, headers)
                         : req.method == "PUT"  ? cli.Put(target, headers, req.body, ct)
                         : req.method == "POST" ? cli.Post(target, headers, req.body, ct)
                         : req.method == "DELETE" ? cli.Delete(target, headers, req.body, ct)
                                                  : cli.Head(target, headers);
    if (!up) {
      res.status = 502;
      res.set_content("{\"error\":\"proxy\",\"reason\":\"upstream failed\"}", "application/json");
      return;
    }
    res.status = up->status;
    res.set_content(up->body, up->get_header_value("Content-Type").empty() ? "application/json"
                                                                            : up->get_header_value("Content-Type"));
  }

  void handle(const httplib::Request& req, httplib::Response& res) {
    std::string target = req.target;
    if (scripted(req, target, res)) return;
    const bool longpoll = target.find("feed=longpoll") != std::string::npos;
    forward(req, longpoll ? as_normal_feed(target) : target, res);
    if (longpoll && res.status == 200 && res.body.find("\"results\":[]") != std::string::npos) pause(1000);
  }
};

scripted_proxy::scripted_proxy() : impl_(std::make_unique<impl>()) {
  auto* self = impl_.get();
  auto h = [self](const httplib::Request& req, httplib::Response& res) { self->handle(req, res); };
  impl_->server.Get(".*", h);
  impl_->server.Put(".*", h);
  impl_->server.Post(".*", h);
  impl_->server.Delete(".*", h);
  impl_->server.set_payload_max_length(256u << 20);
  impl_->server.new_task_queue = [] { return new httplib::ThreadPool(32); };
  port_ = impl_->server.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("scripted_proxy: cannot listen");
  impl_->thread = std::thread([self] { self->server.listen_after_bind(); });
  for (int i = 0; i < 5000 && !impl_->server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

scripted_proxy::~scripted_proxy() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    for (auto* c : impl_->in_flight) c->stop();
  }
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::size_t scripted_proxy::add(rule r) {
  std::lock_guard lk(impl_->mu);
  impl_->rules.push_back(std::move(r));
  impl_->active.push_back(true);
  impl_->hits.push_back(0);
  return impl_->rules.size() - 1;
}

void scripted_proxy::clear() {
  std::lock_guard lk(impl_->mu);
  for (std::size_t i = 0; i < impl_->active.size(); ++i) impl_->active[i] = false;
}

std::uint64_t scripted_proxy::hits(std::size_t i) const {
  std::lock_guard lk(impl_->mu);
  return i < impl_->hits.size() ? impl_->hits[i] : 0;
}

}  // namespace couchgate::test
