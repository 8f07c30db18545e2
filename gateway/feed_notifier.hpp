#pragma once
// Owns: telling the front door's parked live feeds (front::feed_registry) that their database
// changed. Where the server has `_db_updates`, the change detector (the fan-in's, or the front
// door's own when fan-in is off) follows it and passes every event on
// (replicator::change_listener): nothing more is asked of the server.
// Otherwise (pouchdb-server; `fanin.detection: sweep`; detection still undecided) this thread sweeps the
// databases that have feeds open, shared database included, reading their update_seq with
// couchgate's own client at a bounded rate (fanin.sweep_rate databases per second) every
// front.feed_sweep_interval; the registry wakes the feeds that know less than that seq.
// While the events flow, the same look is taken every fanin.verify_interval, spread over half of
// it (replicator::verify_gap): a change whose event never came wakes its feeds then, instead of at
// the database's next write (a continuous feed, or a longpoll with a heartbeat, would wait for it).
#include <chrono>
#include <functional>
#include <thread>

#include "gateway/front/feed_park.hpp"
#include "replicator/change_detector.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/stop_flag.hpp"

namespace couchgate::gateway {

struct feed_notifier_options {
  std::chrono::milliseconds sweep_interval{1000};
  double sweep_rate = 200;  // databases per second
  std::chrono::milliseconds verify_interval{std::chrono::minutes(30)};  // 0: never
};

class feed_notifier {
 public:
  // `detector` may be null (a test, or a daemon without one): then the sweep is always used.
  feed_notifier(replicator::couch_client& client, front::feed_registry& feeds, replicator::change_detector* detector,
                feed_notifier_options opts);
  ~feed_notifier();
  // Before the detector starts: its `_db_updates` events reach the feeds.
  replicator::change_listener listener();
  void start();
  void stop();

 private:
  void run();
  // Reads each watched database's update_seq, at most `rate` a second, while `go` says so (asked
  // at least every sweep_interval).
  void sweep_once(double rate, const std::function<bool()>& go);
  bool db_updates_active() const;

  replicator::couch_client& client_;
  front::feed_registry& feeds_;
  replicator::change_detector* detector_;
  feed_notifier_options opts_;
  replicator::stop_flag stop_;
  std::thread thread_;
};

}  // namespace couchgate::gateway
