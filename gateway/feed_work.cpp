// Owns: the `_users` feed's work order and done-up-to position (see feed_work.hpp).
#include "gateway/feed_work.hpp"

#include <algorithm>
#include <iterator>

namespace couchgate::gateway {

void feed_work::arrived(policy::user_doc u) {
  const ticket id = next_++;
  open_.insert(id);
  // A waiting row of the same name is superseded: the newer revision is what counts, and it
  // lies after the older one, so the position cannot pass it before the newer one is done.
  auto same = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w.second.name == u.name; });
  if (same != waiting_.end()) {
    end(same->first);
    waiting_.erase(same);
  }
  waiting_.emplace_back(id, std::move(u));
}

void feed_work::reached(nlohmann::json position) {
  marks_[next_] = std::move(position);
  // While one row stays open (a user retried for a long time) the feed goes on and marks pile
  // up: bounded by dropping the second oldest. A dropped mark only means the position moves
  // less far at that moment; the newer marks still carry it on.
  if (marks_.size() > max_marks) marks_.erase(std::next(marks_.begin()));
}

std::vector<feed_work::started> feed_work::take() {
  std::vector<started> out;
  for (auto it = waiting_.begin(); it != waiting_.end() && taking_place() < window_;) {
    if (names_.count(it->second.name)) {
      ++it;  // waits for the revision in flight
      continue;
    }
    names_.emplace(it->second.name, it->first);
    flying_.emplace(it->first, it->second.name);
    out.push_back({it->first, std::move(it->second)});
    it = waiting_.erase(it);
  }
  return out;
}

void feed_work::finished(ticket id) {
  auto f = flying_.find(id);
  if (f == flying_.end()) return;
  names_.erase(f->second);
  flying_.erase(f);
  retrying_.erase(id);
  end(id);
}

std::size_t feed_work::taking_place() const {
  const std::size_t resting = retrying_.size();
  return flying_.size() - resting + (resting > window_ ? resting - window_ : 0);
}

void feed_work::retrying(ticket id) {
  if (flying_.count(id)) retrying_.insert(id);
}

bool feed_work::resume(ticket id) {
  if (retrying_.erase(id) == 0) return flying_.count(id) > 0;  // not retrying: nothing to decide
  if (taking_place() <= window_) return true;
  retrying_.insert(id);
  return false;
}

bool feed_work::superseded(const std::string& name) const {
  return std::any_of(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w.second.name == name; });
}

void feed_work::end(ticket id) { open_.erase(id); }

std::optional<nlohmann::json> feed_work::moved() {
  // Every row before the oldest open one has ended: the newest mark at or before it is done.
  const ticket oldest_open = open_.empty() ? next_ : *open_.begin();
  std::optional<nlohmann::json> out;
  while (!marks_.empty() && marks_.begin()->first <= oldest_open) {
    out = std::move(marks_.begin()->second);
    marks_.erase(marks_.begin());
  }
  return out;
}

}  // namespace couchgate::gateway
