// Owns: the per-source transition function (see source_state.hpp).
#include "replicator/source_state.hpp"

namespace couchgate::replicator {

const char* to_string(source_phase p) {
  switch (p) {
    case source_phase::idle: return "idle";
    case source_phase::dirty: return "dirty";
    case source_phase::fetching: return "fetching";
    case source_phase::writing: return "writing";
    case source_phase::checkpointing: return "checkpointing";
    case source_phase::backing_off: return "backing_off";
    case source_phase::failed: return "failed";
  }
  return "unknown";
}

const char* to_string(source_event e) {
  switch (e) {
    case source_event::changed: return "changed";
    case source_event::taken: return "taken";
    case source_event::fetched: return "fetched";
    case source_event::written: return "written";
    case source_event::turn_succeeded: return "turn_succeeded";
    case source_event::turn_more: return "turn_more";
    case source_event::turn_failed: return "turn_failed";
    case source_event::turn_refused: return "turn_refused";
    case source_event::backoff_elapsed: return "backoff_elapsed";
    case source_event::retry_now: return "retry_now";
  }
  return "unknown";
}

source_step step(const source_state& s, source_event e, source_clock::time_point now, const backoff_policy& backoff,
                 const uniform_source& rnd) {
  source_step out;
  out.next = s;
  source_state& n = out.next;
  auto queue = [&] {
    n.phase = source_phase::dirty;
    out.enqueue = true;
  };
  auto ignore = [&] {
    out.ignored = true;
    return out;
  };
  switch (e) {
    case source_event::changed:
      if (!n.dirty_since) n.dirty_since = now;
      if (n.phase == source_phase::idle) queue();
      else if (in_turn(n.phase)) n.dirty_again = true;
      // dirty: keeps its place; backing off: the retry picks the change up, not sooner
      return out;
    case source_event::taken:
      if (n.phase != source_phase::dirty) return ignore();
      n.phase = source_phase::fetching;
      n.dirty_again = false;
      return out;
    case source_event::fetched:
      if (n.phase != source_phase::fetching) return ignore();
      n.phase = source_phase::writing;
      return out;
    case source_event::written:
      if (n.phase != source_phase::writing) return ignore();
      n.phase = source_phase::checkpointing;
      return out;
    case source_event::turn_succeeded:
    case source_event::turn_more: {
      if (!in_turn(n.phase)) return ignore();
      n.failures = 0;
      const bool more = e == source_event::turn_more;
      if (!more && n.dirty_since) {
        out.lag = now - *n.dirty_since;
        n.dirty_since.reset();
      }
      if (more || n.dirty_again) queue();
      else n.phase = source_phase::idle;
      n.dirty_again = false;
      return out;
    }
    case source_event::turn_failed:
    case source_event::turn_refused:
      if (!in_turn(n.phase)) return ignore();
      if (n.failures < UINT32_MAX) ++n.failures;
      n.phase = e == source_event::turn_failed ? source_phase::backing_off : source_phase::failed;
      n.dirty_again = false;  // the retry covers it
      n.ready_at = now + backoff_delay(backoff, n.failures, rnd);
      out.wake_at = n.ready_at;
      return out;
    case source_event::backoff_elapsed:
      if (!waiting_out_backoff(n.phase) || now < n.ready_at) return ignore();
      queue();
      return out;
    case source_event::retry_now:
      if (!waiting_out_backoff(n.phase)) return ignore();
      n.failures = 0;
      queue();
      return out;
  }
  return ignore();
}

}  // namespace couchgate::replicator
