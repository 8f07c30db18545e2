// Owns: the daemon's socket budget, work plus change feeds (see connection_budget.hpp).
#include "gateway/connection_budget.hpp"

namespace couchgate::gateway {

connection_budget budget_for(const config& cfg) {
  connection_budget b;
  b.work = cfg.fanin.max_connections;
  if (cfg.provisioning.enabled) ++b.feeds;  // the _users longpoll
  // _db_updates longpoll, for the fan-in and the front door's live feeds: `auto` uses it wherever
  // the server has it (a sweep needs no feed).
  if ((cfg.fanin.enabled || cfg.front.enabled) && cfg.fanin.detection != detection_mode::sweep) ++b.feeds;
  return b;
}

}  // namespace couchgate::gateway
