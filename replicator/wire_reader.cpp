// Owns: simdjson On-Demand plumbing for the wire parsers (see wire_reader.hpp).
#include "replicator/wire_reader.hpp"

namespace couchgate::replicator::wire {

namespace {
simdjson::ondemand::parser& parser_for(reader::role r) {
  thread_local simdjson::ondemand::parser answers, documents;
  return r == reader::role::answer ? answers : documents;
}
}  // namespace

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

reader::reader(std::string text, role r) : text_(std::move(text)), size_(text_.size()) {
  text_.resize(size_ + simdjson::SIMDJSON_PADDING, ' ');
  ok_ = !parser_for(r).iterate(simdjson::padded_string_view(text_.data(), size_, text_.size())).get(doc_);
}

std::string reader::take_text() {
  text_.resize(size_);
  return std::move(text_);
}

bool raw_of(simdjson::ondemand::value& v, std::string_view& out) {
  simdjson::ondemand::json_type t;
  if (v.type().get(t)) return false;
  if (t == simdjson::ondemand::json_type::object) {
    simdjson::ondemand::object o;
    if (v.get_object().get(o) || o.raw_json().get(out)) return false;
  } else if (t == simdjson::ondemand::json_type::array) {
    simdjson::ondemand::array a;
    if (v.get_array().get(a) || a.raw_json().get(out)) return false;
  } else {
    out = v.raw_json_token();
  }
  out = trim(out);
  return true;
}

}  // namespace couchgate::replicator::wire
