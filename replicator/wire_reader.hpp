#pragma once
// Owns: the simdjson On-Demand plumbing shared by the wire parsers (wire_json.cpp, answers.cpp),
// kept out of public headers: an owned, padded copy of the text, a per-thread parser per role,
// and the raw text of a value. Internal to replicator/.
#include <simdjson.h>

#include <string>
#include <string_view>

namespace couchgate::replicator::wire {

// JSON text without trailing whitespace (simdjson's raw views run up to the next token).
std::string_view trim(std::string_view s);

class reader {
 public:
  // A document is read while an answer that holds it is being iterated: each role has its own
  // per-thread parser.
  enum class role { answer, document };
  reader(std::string text, role r);
  reader(const reader&) = delete;
  reader& operator=(const reader&) = delete;

  bool ok() const { return ok_; }
  simdjson::ondemand::document& doc() { return doc_; }
  // The text, padded: positions of simdjson views are relative to text().data().
  const std::string& text() const { return text_; }
  std::string take_text();

 private:
  std::string text_;
  std::size_t size_ = 0;
  simdjson::ondemand::document doc_;
  bool ok_ = false;
};

// The raw JSON text of a value: objects and arrays whole, scalars as their token. Consumes it.
// False when the value is not valid JSON.
bool raw_of(simdjson::ondemand::value& v, std::string_view& out);

}  // namespace couchgate::replicator::wire
