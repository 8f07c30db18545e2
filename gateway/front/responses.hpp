#pragma once
// Owns: the small answers couchgate writes itself, in CouchDB's JSON error style
// ({"error": ..., "reason": ...}), and the one write helper they share.
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "gateway/front/stream.hpp"

namespace couchgate::gateway::front {

using header_list = std::vector<std::pair<std::string, std::string>>;

// The JSON body for a status: {"error": error, "reason": reason}.
std::string json_error(std::string_view error, std::string_view reason);

// Writes a complete response (status, JSON body, extra headers). False when the write failed.
net::awaitable<bool> write_response(any_stream& stream, http::status status, std::string body, bool keep_alive,
                                    std::chrono::milliseconds timeout, const header_list& headers = {});

inline net::awaitable<bool> write_json_error(any_stream& stream, http::status status, std::string_view error,
                                             std::string_view reason, bool keep_alive, std::chrono::milliseconds timeout,
                                             const header_list& headers = {}) {
  return write_response(stream, status, json_error(error, reason), keep_alive, timeout, headers);
}

}  // namespace couchgate::gateway::front
