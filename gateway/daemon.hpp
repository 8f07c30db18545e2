#pragma once
// Owns: the daemon's lifecycle. Start order: admin API (so /healthz answers at once) -> wait
// for CouchDB (capped, jittered backoff; never exits) -> state, central and shared databases ->
// checkpoints -> fan-in workers -> change detection -> provisioning (ready after its first
// reconcile). Stop order is the reverse, after the HTTP pool is shut down so that feeds and
// rounds in flight end at once (an interrupted round only re-sends, never loses).
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "gateway/config.hpp"

namespace couchgate::gateway {

class daemon {
 public:
  daemon(config cfg, std::string config_path);
  ~daemon();
  // Blocks until request_stop(); returns the process exit code.
  int run();
  void request_stop();
  // SIGHUP: re-read the config file and apply the keys the config table marks live
  // (gateway/config_table.cpp); the other changed keys are named in one warning (need a restart).
  void request_reload();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};


}  // namespace couchgate::gateway
