#pragma once
// An HTTP proxy for hostile-answer tests (the sibling of fault_proxy, which works below HTTP):
// listens on 127.0.0.1 (a free port) and forwards every request to the test server, except the
// requests a rule matches, which get the rule's scripted answer instead (wrong types, missing
// fields, not JSON, a 413...). Rules are tried in the order added; one with `times` left > 0
// (or < 0: unlimited) and whose method, path and body substrings all match answers.
//
// cpp-httplib on its own threads; the destructor stops it. Never a mock of CouchDB: everything
// no rule matches is the real server's answer.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace couchgate::test {

class scripted_proxy {
 public:
  struct rule {
    std::string method;          // empty: any
    std::string path_contains;   // in the request target (path and query); empty: any
    std::string body_contains;   // in the request body; empty: any
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    int times = -1;              // answers left; < 0: unlimited
    int delay_ms = 0;            // the answer is sent this late (a longpoll that waits)
  };

  scripted_proxy();  // forwards to env().host:env().port
  ~scripted_proxy();
  scripted_proxy(const scripted_proxy&) = delete;
  scripted_proxy& operator=(const scripted_proxy&) = delete;

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Returns the rule's index, for hits().
  std::size_t add(rule r);
  void clear();  // forward everything again
  // Requests answered by rule i so far (kept after clear()).
  std::uint64_t hits(std::size_t i) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  int port_ = 0;
};

}  // namespace couchgate::test
