// Owns: depth-limited parsing, checked accessors and raw documents (see wire_json.hpp).
#include "replicator/wire_json.hpp"

#include <atomic>
#include <simdjson.h>

#include "replicator/wire_reader.hpp"

namespace couchgate::replicator::wire {

namespace {
std::atomic<std::uint64_t> rejected_{0};

std::string truncated(std::string s, std::size_t max) {
  if (s.size() > max) {
    s.resize(max);
    s += "...";
  }
  return s;
}
}  // namespace

std::optional<std::size_t> nesting_depth(std::string_view text, std::size_t limit) {
  std::string open;  // the brackets open now, innermost last
  std::size_t deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (open.size() >= limit) return std::nullopt;
        open.push_back(c);
        deepest = std::max(deepest, open.size());
        break;
      case ']':
      case '}':
        if (open.empty() || open.back() != (c == ']' ? '[' : '{')) return std::nullopt;
        open.pop_back();
        break;
      default: break;
    }
  }
  if (in_string || !open.empty()) return std::nullopt;
  return deepest;
}

couch_error malformed(std::string what) {
  rejected_.fetch_add(1, std::memory_order_relaxed);
  return couch_error{couch_error_kind::protocol, 0, "malformed", std::move(what)};
}

std::uint64_t rejected() { return rejected_.load(std::memory_order_relaxed); }

result<json> parse(std::string_view text, std::string_view what) {
  if (!nesting_depth(text)) {
    return malformed(std::string(what) + " is not JSON or is nested deeper than " + std::to_string(max_depth) + " levels");
  }
  auto j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return malformed(std::string(what) + " is not JSON: " + truncated(std::string(text.substr(0, 80)), 80));
  return j;
}

const json* find(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

const json* find_object(const json& obj, const char* key) {
  const json* v = find(obj, key);
  return v && v->is_object() ? v : nullptr;
}

const json* find_array(const json& obj, const char* key) {
  const json* v = find(obj, key);
  return v && v->is_array() ? v : nullptr;
}

std::optional<std::string> get_string(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v || !v->is_string()) return std::nullopt;
  return v->get<std::string>();
}

bool get_true(const json& obj, const char* key) {
  const json* v = find(obj, key);
  return v && v->is_boolean() && v->get<bool>();
}

std::string text_of(const json& v, std::size_t max) {
  if (v.is_string()) return truncated(v.get<std::string>(), max);
  return truncated(v.dump(-1, ' ', false, json::error_handler_t::replace), max);
}

std::string text_of(std::string_view raw_json_text, std::size_t max) {
  if (raw_json_text.size() >= 2 && raw_json_text.front() == '"') {
    auto j = parse(raw_json_text, "string");
    if (j.ok() && j.value().is_string()) return truncated(j.value().get<std::string>(), max);
  }
  return truncated(std::string(raw_json_text), max);
}

std::string quote(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {
// A JSON number token: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
bool json_number(std::string_view t) {
  std::size_t i = 0;
  const auto digits = [&] {
    const std::size_t from = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i > from;
  };
  if (i < t.size() && t[i] == '-') ++i;
  if (i < t.size() && t[i] == '0') ++i;
  else if (!digits()) return false;
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == t.size();
}

// Reads every value (On-Demand finds a broken one only when it is read). Depth is bounded by
// the nesting_depth check before.
bool valid_value(simdjson::ondemand::value& v) {
  namespace od = simdjson::ondemand;
  od::json_type t;
  if (v.type().get(t)) return false;
  switch (t) {
    case od::json_type::object: {
      od::object o;
      if (v.get_object().get(o)) return false;
      for (auto f : o) {
        std::string_view k;
        od::value fv;
        if (f.unescaped_key().get(k) || f.value().get(fv) || !valid_value(fv)) return false;
      }
      return true;
    }
    case od::json_type::array: {
      od::array a;
      if (v.get_array().get(a)) return false;
      for (auto e : a) {
        od::value ev;
        if (e.get(ev) || !valid_value(ev)) return false;
      }
      return true;
    }
    case od::json_type::string: {
      std::string_view str;
      return !v.get_string().get(str);
    }
    case od::json_type::number:
      return json_number(trim(v.raw_json_token()));
    case od::json_type::boolean: {
      bool b = false;
      return !v.get_bool().get(b);
    }
    case od::json_type::null: {
      bool n = false;
      return !v.is_null().get(n) && n;
    }
  }
  return false;
}

// The padded text (a reader's) starts with one valid JSON value.
bool fully_valid(const std::string& padded) {
  thread_local simdjson::ondemand::parser validator;
  const std::size_t size = padded.size() - simdjson::SIMDJSON_PADDING;
  simdjson::ondemand::document d;
  if (validator.iterate(simdjson::padded_string_view(padded.data(), size, padded.size())).get(d)) return false;
  simdjson::ondemand::value v;
  // (Text after the value is not looked for: documents are cut from an answer by raw_of.)
  return !d.get_value().get(v) && valid_value(v);
}
}  // namespace

result<raw_doc> read_doc(std::string text) {
  raw_doc d;
  if (!nesting_depth(text)) {
    return malformed("document is not JSON or is nested deeper than " + std::to_string(max_depth) + " levels");
  }
  reader r(std::move(text), reader::role::document);
  if (!r.ok()) return malformed("document is not JSON");
  // On-Demand checks only what is read, and the fields below skip the values they do not need
  // (attachments, the body): a broken value inside them would go to the target as it came and
  // fail its whole _bulk_docs. The whole text is validated first (found by the bulk_get fuzz
  // target: `"_attachments":{"a"o:t{...}}`).
  // (simdjson's DOM parser would refuse numbers JSON allows and CouchDB keeps: beyond 64 bits, 1e400.)
  if (!fully_valid(r.text())) return malformed("document is not JSON");
  simdjson::ondemand::object obj;
  if (r.doc().get_object().get(obj)) return malformed("document is not a JSON object");
  bool has_id = false;
  for (auto f : obj) {
    std::string_view key;
    if (f.unescaped_key().get(key)) return malformed("document is not JSON");
    simdjson::ondemand::value v;
    if (f.value().get(v)) return malformed("document is not JSON");
    if (key == "_id") {
      std::string_view tok = trim(v.raw_json_token());
      std::string_view id;
      if (v.get_string().get(id)) return malformed("document field '_id' is not a string");
      d.id.assign(id);
      d.id_pos = static_cast<std::size_t>(tok.data() - r.text().data());
      d.id_len = tok.size();
      has_id = true;
    } else if (key == "_rev") {
      std::string_view rev;
      if (v.get_string().get(rev)) return malformed("document field '_rev' is not a string" + (has_id ? " (" + d.id + ")" : std::string()));
      d.rev.assign(rev);
    } else if (key == "_deleted") {
      bool del = false;
      if (v.get_bool().get(del)) return malformed("document field '_deleted' is not a boolean" + (has_id ? " (" + d.id + ")" : std::string()));
      d.deleted = del;
    } else if (key == "_attachments") {
      d.has_attachments = true;
    } else if (key == "_revisions") {
      simdjson::ondemand::object revs;
      if (v.get_object().get(revs)) return malformed("document field '_revisions' is not an object" + (has_id ? " (" + d.id + ")" : std::string()));
      d.has_revisions = true;
      for (auto rf : revs) {
        std::string_view rk;
        simdjson::ondemand::value rv;
        if (rf.unescaped_key().get(rk) || rf.value().get(rv)) return malformed("document is not JSON");
        if (rk == "start") {
          std::uint64_t start = 0;
          if (!rv.get_uint64().get(start)) d.revisions_start = start;
        } else if (rk == "ids") {
          simdjson::ondemand::array ids;
          std::size_t n = 0;
          if (!rv.get_array().get(ids) && !ids.count_elements().get(n)) d.revisions_count = n;
        }
      }
    }
  }
  if (!has_id) return malformed("document has no '_id' string");
  d.text = r.take_text();
  return d;
}

std::string with_id(const raw_doc& d, std::string_view id) {
  std::string out;
  std::string q = quote(id);
  out.reserve(d.text.size() + q.size());
  out.append(d.text, 0, d.id_pos);
  out += q;
  out.append(d.text, d.id_pos + d.id_len, std::string::npos);
  return out;
}

std::string with_field(std::string_view object_text, std::string_view key, std::string_view value_json) {
  std::size_t close = object_text.rfind('}');
  if (close == std::string_view::npos) return std::string(object_text);
  std::size_t before = close;
  while (before > 0 && (object_text[before - 1] == ' ' || object_text[before - 1] == '\n' ||
                        object_text[before - 1] == '\r' || object_text[before - 1] == '\t')) {
    --before;
  }
  const bool empty = before > 0 && object_text[before - 1] == '{';
  std::string out;
  out.reserve(object_text.size() + key.size() + value_json.size() + 4);
  out.append(object_text.substr(0, close));
  if (!empty) out.push_back(',');
  out += quote(key);
  out.push_back(':');
  out.append(value_json);
  out.append(object_text.substr(close));
  return out;
}

}  // namespace couchgate::replicator::wire
