#include "tests/unit/scripted_transport.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <utility>

#include "replicator/answers.hpp"
#include "replicator/logger.hpp"

namespace couchgate::test {

r::http_response answer(long status, std::string body, std::string set_cookie) {
  r::http_response a;
  a.status = status;
  a.body = std::move(body);
  a.set_cookie = std::move(set_cookie);
  return a;
}

r::http_request get_request(std::string target) {
  r::http_request q;
  q.target = std::move(target);
  return q;
}

r::http_response failure(r::error_kind kind, std::string error) {
  r::http_response a;
  a.kind = kind;
  a.error = std::move(error);
  return a;
}

r::http_response all_missing(const r::http_request& q) {
  const auto asked = nlohmann::json::parse(q.body_text());
  auto a = nlohmann::json::object();
  for (const auto& [id, revs] : asked.items()) a[id] = {{"missing", revs}};
  return answer(200, a.dump());
}

std::vector<r::change_row> feed_rows(const row_route& route, const std::vector<std::string>& ids) {
  auto rows = nlohmann::json::array();
  int i = 0;
  for (const auto& id : ids) {
    const std::string rev = "1-" + std::string(31, 'a') + std::to_string(++i % 10);
    const std::string source_id = route.source_prefix + id;
    rows.push_back({{"seq", std::to_string(i) + "-s"},
                    {"id", source_id},
                    {"changes", {{{"rev", rev}}}},
                    {"doc", {{"_id", source_id}, {"_rev", rev}, {"n", i}}}});
  }
  auto page = r::parse_changes(nlohmann::json{{"results", rows}, {"last_seq", std::to_string(i) + "-s"}}.dump());
  REQUIRE(page.ok());
  std::vector<r::change_row> out;
  for (std::size_t k = 0; k < page.value().changes.size(); ++k) {
    auto& c = page.value().changes[k];
    auto body = r::inline_revision(c);
    REQUIRE(body);
    out.push_back(r::change_row{route.unit, route.source_db, c.id, route.target_db, route.target_prefix + ids[k], c.revs,
                                std::move(body)});
  }
  return out;
}

captured_log::captured_log(const std::string& logger)
    : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)), logger_(r::named_logger(logger)) {
  logger_->sinks().push_back(sink_);
}

captured_log::~captured_log() {
  auto& s = logger_->sinks();
  s.erase(std::remove(s.begin(), s.end(), sink_), s.end());
}

std::string captured_log::all() const {
  std::string out;
  for (const auto& l : sink_->last_formatted()) out += l;
  return out;
}

std::size_t captured_log::count(const std::string& part) const {
  std::size_t n = 0;
  for (const auto& l : sink_->last_formatted()) n += l.find(part) != std::string::npos;
  return n;
}

r::fanin_options central_options() {
  r::fanin_options o;
  o.central_db = "central";
  return o;
}

scripted_transport& scripted_transport::on(std::string method, std::string target_contains, r::http_response a, int times) {
  return on(std::move(method), std::move(target_contains), [a = std::move(a)](const r::http_request&) { return a; }, times);
}

scripted_transport& scripted_transport::on(std::string method, std::string target_contains, responder f, int times) {
  std::lock_guard lk(mu_);
  rules_.push_back(rule{std::move(method), std::move(target_contains), std::move(f), times});
  return *this;
}

void scripted_transport::submit(r::http_request req, callback done) {
  responder f;
  {
    std::unique_lock lk(mu_);
    log_.push_back(recorded{req.method, req.target, std::string(req.body_text()), req.cookie, req.authorization,
                            req.cookie_may_be_stale, req.follow_up});
    for (auto& h : holds_) {
      if (h.used || h.method != req.method || req.target.find(h.target) == std::string::npos) continue;
      h.used = true;
      held_.emplace_back(std::move(done), h.answer);
      cv_.notify_all();
      return;
    }
    for (auto& rl : rules_) {
      if (rl.times == 0 || rl.method != req.method || req.target.find(rl.target) == std::string::npos) continue;
      if (rl.times > 0) --rl.times;
      f = rl.f;
      break;
    }
    if (!f && req.target.find("feed=longpoll") != std::string::npos) {
      cv_.notify_all();
      if (park_feeds_ && !closed_) {
        parked_.push_back(std::move(done));
        return;
      }
      cv_.wait(lk, [this] { return closed_; });
      lk.unlock();
      done(failure(r::error_kind::cancelled, "closed"));
      return;
    }
    if (!f) unexpected_.push_back(req.method + " " + req.target);
    cv_.notify_all();
  }
  done(f ? f(req) : failure(r::error_kind::network, "unscripted request"));
  std::lock_guard lk(mu_);
  cv_.notify_all();
}

std::vector<scripted_transport::recorded> scripted_transport::requests() const {
  std::lock_guard lk(mu_);
  return log_;
}

std::size_t scripted_transport::count(const std::string& method, const std::string& target_contains) const {
  std::lock_guard lk(mu_);
  std::size_t n = 0;
  for (const auto& q : log_) {
    if (q.method == method && q.target.find(target_contains) != std::string::npos) ++n;
  }
  return n;
}

std::vector<std::string> scripted_transport::unexpected() const {
  std::lock_guard lk(mu_);
  return unexpected_;
}

std::size_t scripted_transport::pending() const {
  std::lock_guard lk(mu_);
  std::size_t n = 0;
  for (const auto& rl : rules_) {
    if (rl.times > 0) n += static_cast<std::size_t>(rl.times);
  }
  return n;
}

bool scripted_transport::wait_for(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, std::chrono::milliseconds(20));  // woken by every request; re-checked anyway
  }
  return true;
}

void scripted_transport::close() {
  std::vector<callback> parked;
  std::vector<std::pair<callback, r::http_response>> held;
  {
    std::lock_guard lk(mu_);
    closed_ = true;
    parked.swap(parked_);
    held.swap(held_);
    cv_.notify_all();
  }
  for (auto& done : parked) done(failure(r::error_kind::cancelled, "closed"));
  for (auto& h : held) h.first(failure(r::error_kind::cancelled, "closed"));
}

void scripted_transport::hold(std::string method, std::string target_contains, r::http_response a) {
  std::lock_guard lk(mu_);
  holds_.push_back(hold_rule{std::move(method), std::move(target_contains), std::move(a)});
}

std::size_t scripted_transport::held() const {
  std::lock_guard lk(mu_);
  return held_.size();
}

void scripted_transport::release_held() {
  std::vector<std::pair<callback, r::http_response>> held;
  {
    std::lock_guard lk(mu_);
    held.swap(held_);
  }
  for (auto& [done, a] : held) done(std::move(a));
  std::lock_guard lk(mu_);
  cv_.notify_all();
}

void scripted_transport::park_quiet_feeds() {
  std::lock_guard lk(mu_);
  park_feeds_ = true;
}

scripted_transport::~scripted_transport() { close(); }

}  // namespace couchgate::test
