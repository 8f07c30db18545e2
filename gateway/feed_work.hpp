#pragma once
// Owns: the order of the `_users` feed's work (issue #18): which rows the provisioner may start
// now, and how far the stored feed position may move. Rows are started as soon as they arrive,
// up to `window` users in flight (users waiting to be retried leave their place, see
// retrying()), never two revisions of one name at once (a later row of a name in flight waits
// for it; a later row of a name waiting replaces the waiting one, whose revision is
// superseded). The position given back is "done up to here": the newest position the feed
// reported (reached) such that every row that arrived before it has finished, so a crash never
// skips a user. Pure: no I/O, no clock.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/users.hpp"

namespace couchgate::gateway {

class feed_work {
 public:
  using ticket = std::uint64_t;
  struct started {
    ticket id;
    policy::user_doc user;
  };

  explicit feed_work(std::size_t window) : window_(window == 0 ? 1 : window) {}

  // A row of the feed, in the feed's order.
  void arrived(policy::user_doc u);
  // Every row of the feed up to `position` has arrived.
  void reached(nlohmann::json position);
  // The rows to start now (oldest first), each now in flight: at most window minus those in
  // flight, none whose name is in flight.
  std::vector<started> take();
  // A started row is finished (done, or failed for good): its name may start again.
  void finished(ticket id);
  // A started row failed and waits to be tried again: its name stays taken (a later row of it
  // waits, superseded() says so) and the position stays before it, but it leaves its place in
  // the window to the rows behind it, so a few users the server keeps refusing do not stop the
  // others. Only `window` retrying rows leave their place: beyond that they count again, so a
  // server refusing everyone (an outage) has at most twice the window in play.
  void retrying(ticket id);
  // A retrying row's next try is due: true when the window lets it start now (it counts as in
  // flight again); false: it stays retrying, asked again later.
  bool resume(ticket id);
  // The done-up-to position, when it moved since the last call.
  std::optional<nlohmann::json> moved();

  // A row of `name` arrived after the one in flight and waits for it: a failed row of that name
  // need not be retried, the newer revision supersedes it (finished() it instead).
  bool superseded(const std::string& name) const;

  std::size_t waiting() const { return waiting_.size(); }    // arrived, not started
  std::size_t in_flight() const { return names_.size(); }   // started and not finished, retrying ones too
  std::size_t retrying_rows() const { return retrying_.size(); }
  std::size_t window() const { return window_; }
  std::size_t marks() const { return marks_.size(); }   // positions reached, not yet passed
  static constexpr std::size_t max_marks = 1024;

 private:
  void end(ticket id);  // the row's work is over (finished or superseded)
  std::size_t taking_place() const;  // rows counted against the window

  std::size_t window_;
  ticket next_ = 0;
  std::deque<std::pair<ticket, policy::user_doc>> waiting_;  // arrival order
  std::unordered_map<std::string, ticket> names_;            // name -> its row in flight
  std::unordered_map<ticket, std::string> flying_;           // ticket -> name, for finished()
  std::set<ticket> open_;                                    // rows arrived and not ended
  std::set<ticket> retrying_;                                // started rows waiting for a retry
  std::map<ticket, nlohmann::json> marks_;                   // boundary (first ticket after) -> position
};

}  // namespace couchgate::gateway
