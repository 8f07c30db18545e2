// Owns: couchgate's own JSON answers (see responses.hpp).
#include "gateway/front/responses.hpp"

#include <nlohmann/json.hpp>

namespace couchgate::gateway::front {

std::string json_error(std::string_view error, std::string_view reason) {
  return nlohmann::json{{"error", error}, {"reason", reason}}.dump() + "\n";
}

net::awaitable<bool> write_response(any_stream& stream, http::status status, std::string body, bool keep_alive,
                                    std::chrono::milliseconds timeout, const header_list& headers) {
  http::response<http::string_body> res{status, 11};
  res.set(http::field::server, "couchgate");
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "must-revalidate");
  for (const auto& [name, value] : headers) res.set(name, value);
  res.body() = std::move(body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  error_code ec;
  stream.tcp().expires_after(timeout);
  co_await http::async_write(stream, res, ec_token(ec));
  co_return !ec;
}

}  // namespace couchgate::gateway::front
