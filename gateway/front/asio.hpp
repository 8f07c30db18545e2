#pragma once
// Owns: the Boost.Asio/Beast includes and namespace aliases every front door file uses.
// <utility> first: Boost 1.74's awaitable.hpp uses std::exchange without including it.
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace couchgate::gateway::front {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace ssl = boost::asio::ssl;
using error_code = boost::system::error_code;
using tcp = net::ip::tcp;

// co_await op(..., ec_token(ec)): errors as values, never exceptions, on every I/O path.
inline auto ec_token(error_code& ec) { return net::redirect_error(net::use_awaitable, ec); }

}  // namespace couchgate::gateway::front
