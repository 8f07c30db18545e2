#pragma once
// Owns: one byte stream that is either plain TCP or TLS over TCP (beast::tcp_stream underneath,
// whose expires_after is the timeout of every read and write). Plain and TLS connections then
// share every line of the HTTP code (client side and upstream side alike).
#include <memory>

#include "gateway/front/asio.hpp"

namespace couchgate::gateway::front {

class any_stream {
 public:
  using executor_type = beast::tcp_stream::executor_type;

  explicit any_stream(beast::tcp_stream plain) : plain_(std::make_unique<beast::tcp_stream>(std::move(plain))) {}
  // TLS over the given stream; `context` must outlive this object (callers keep a shared_ptr).
  any_stream(beast::tcp_stream plain, ssl::context& context)
      : tls_(std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(plain), context)) {}

  executor_type get_executor() { return tcp().get_executor(); }
  beast::tcp_stream& tcp() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }
  bool is_tls() const { return tls_ != nullptr; }
  beast::ssl_stream<beast::tcp_stream>& tls() { return *tls_; }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    if (tls_) return tls_->async_read_some(buffers, std::forward<Token>(token));
    return plain_->async_read_some(buffers, std::forward<Token>(token));
  }
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    if (tls_) return tls_->async_write_some(buffers, std::forward<Token>(token));
    return plain_->async_write_some(buffers, std::forward<Token>(token));
  }

  // Closes the socket (a TLS close_notify is not waited for: peers that vanish would hold us).
  void close() {
    error_code ec;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    tcp().close();
  }

 private:
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
};

}  // namespace couchgate::gateway::front
