#pragma once
// A transport (replicator/transport/transport.hpp) that answers from a script, for unit tests of
// everything above the seam: couch_client, transfer, state_store, fanin, the feeds, the
// provisioner, session_auth. Rules are tried in the order added; the first whose method and
// target substring match and that has answers left answers (a rule may compute its answer from
// the request). Every request is recorded. A request no rule answers is recorded as unexpected
// and gets a network error, except a longpoll feed (`feed=longpoll`), which waits until close()
// (as a quiet feed does) and then ends as cancelled (as at shutdown).
// Answers are given on the caller's thread, before submit returns.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "replicator/transport/transport.hpp"

namespace couchgate::test {

namespace r = couchgate::replicator;

// An answer with a status and a body (and a Set-Cookie / Retry-After header when given).
r::http_response answer(long status, std::string body, std::string set_cookie = {});
// A transport failure (error_kind::network unless told).
r::http_response failure(r::error_kind kind = r::error_kind::network, std::string error = "connection reset by peer");

class scripted_transport final : public r::transport {
 public:
  using responder = std::function<r::http_response(const r::http_request&)>;
  struct recorded {
    std::string method, target, body, cookie, authorization;
    bool cookie_may_be_stale = false;
  };

  // times < 0: unlimited.
  scripted_transport& on(std::string method, std::string target_contains, r::http_response a, int times = 1);
  scripted_transport& on(std::string method, std::string target_contains, responder f, int times = 1);

  void submit(r::http_request req, callback done) override;

  std::vector<recorded> requests() const;
  std::size_t count(const std::string& method, const std::string& target_contains) const;
  std::vector<std::string> unexpected() const;  // "METHOD target" of requests no rule answered
  // Rules with answers left (unlimited ones not counted).
  std::size_t pending() const;
  // Waits (up to `limit`) until pred() holds, re-checking after every request.
  bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds limit = std::chrono::seconds(5));
  // Unblocks the feeds waiting for a rule, and every later one, with error_kind::cancelled.
  void close();

 private:
  struct rule {
    std::string method, target;
    responder f;
    int times;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<rule> rules_;
  std::vector<recorded> log_;
  std::vector<std::string> unexpected_;
  bool closed_ = false;
};

}  // namespace couchgate::test
