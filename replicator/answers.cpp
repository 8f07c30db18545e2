// Owns: parsing document-carrying CouchDB answers from raw text (see answers.hpp).
#include "replicator/answers.hpp"

#include "replicator/wire_reader.hpp"

namespace couchgate::replicator {

namespace od = simdjson::ondemand;
using wire::malformed;

namespace {

// Calls fn(key, value) for each field of obj; fn returns an error message to stop with, or "".
// Returns the first error (a JSON error of the iteration itself included), or "".
template <class F>
std::string each_field(od::object& obj, const char* what, F&& fn) {
  for (auto f : obj) {
    std::string_view key;
    od::value v;
    if (f.unescaped_key().get(key) || f.value().get(v)) return std::string(what) + " is not JSON";
    std::string e = fn(key, v);
    if (!e.empty()) return e;
  }
  return {};
}

template <class F>
std::string each_element(od::array& arr, const char* what, F&& fn) {
  for (auto el : arr) {
    od::value v;
    if (el.get(v)) return std::string(what) + " is not JSON";
    std::string e = fn(v);
    if (!e.empty()) return e;
  }
  return {};
}

// A small JSON value (a seq) as a DOM, depth-limited.
bool small_value(od::value& v, json& out) {
  std::string_view raw;
  if (!wire::raw_of(v, raw)) return false;
  auto j = wire::parse(raw, "value");
  if (!j.ok()) return false;
  out = std::move(j.value());
  return true;
}

// A document value: read when it is an object; otherwise why not.
void document_of(od::value& v, std::optional<wire::raw_doc>& doc, std::optional<std::string>& error) {
  od::json_type t;
  if (v.type().get(t)) {
    error = "document is not JSON";
    return;
  }
  if (t == od::json_type::null) return;
  std::string_view raw;
  if (t != od::json_type::object || !wire::raw_of(v, raw)) {
    error = "document is not a JSON object";
    return;
  }
  auto d = wire::read_doc(std::string(raw));
  if (d.ok()) doc = std::move(d.value());
  else error = d.error().reason;
}

std::string text_value(od::value& v) {
  std::string_view raw;
  if (!wire::raw_of(v, raw)) return "?";
  return wire::text_of(raw);
}

}  // namespace

result<feed_page> parse_changes(std::string_view body) {
  wire::reader r{std::string(body), wire::reader::role::answer};
  od::object top;
  if (!r.ok() || r.doc().get_object().get(top)) return malformed("_changes answer is not a JSON object");
  feed_page page;
  bool has_results = false;
  json answer_last_seq, last_row_seq;
  std::string err = each_field(top, "_changes answer", [&](std::string_view key, od::value& v) -> std::string {
    if (key == "results") {
      od::array rows;
      if (v.get_array().get(rows)) return "_changes answer: 'results' is not an array";
      has_results = true;
      return each_element(rows, "_changes row", [&](od::value& rv) -> std::string {
        od::object row;
        if (rv.get_object().get(row)) return "_changes row is not an object";
        feed_change c;
        bool has_id = false, has_changes = false;
        last_row_seq = nullptr;
        std::string e = each_field(row, "_changes row", [&](std::string_view k, od::value& fv) -> std::string {
          if (k == "id") {
            std::string_view id;
            if (fv.get_string().get(id)) return "_changes row: 'id' is not a string";
            c.id.assign(id);
            has_id = true;
          } else if (k == "changes") {
            od::array changes;
            if (fv.get_array().get(changes)) return "_changes row: 'changes' is not an array";
            has_changes = true;
            return each_element(changes, "_changes row", [&](od::value& ch) -> std::string {
              od::object o;
              if (ch.get_object().get(o)) return "_changes row: an entry of 'changes' is not an object";
              return each_field(o, "_changes row", [&](std::string_view ck, od::value& cv) -> std::string {
                if (ck != "rev") return {};
                std::string_view rev;
                if (cv.get_string().get(rev)) return "_changes row: a 'rev' is not a string";
                c.revs.emplace_back(rev);
                return {};
              });
            });
          } else if (k == "deleted") {
            if (fv.get_bool().get(c.deleted)) return "_changes row: 'deleted' is not a boolean";
          } else if (k == "seq") {
            if (!small_value(fv, last_row_seq)) return "_changes row: 'seq' is not readable";
          } else if (k == "doc") {
            document_of(fv, c.doc, c.doc_error);
            if (c.doc_error) wire::malformed(*c.doc_error);  // counted
          }
          return {};
        });
        if (!e.empty()) return e;
        if (!has_id || !has_changes) return "_changes row without id or changes";
        page.changes.push_back(std::move(c));
        return {};
      });
    }
    if (key == "last_seq") {
      if (!small_value(v, answer_last_seq)) return "_changes answer: 'last_seq' is not readable";
    } else if (key == "pending") {
      double p = 0;
      if (!v.get_double().get(p)) page.pending = p;
    }
    return {};
  });
  if (!err.empty()) return malformed(err);
  if (!has_results) return malformed("_changes answer has no results array");
  page.last_seq = !page.changes.empty() && !last_row_seq.is_null() ? last_row_seq : answer_last_seq;
  return page;
}

result<std::vector<listed_doc>> parse_all_docs(std::string_view body) {
  wire::reader r{std::string(body), wire::reader::role::answer};
  od::object top;
  if (!r.ok() || r.doc().get_object().get(top)) return malformed("_all_docs answer is not a JSON object");
  std::vector<listed_doc> out;
  bool has_rows = false;
  std::string err = each_field(top, "_all_docs answer", [&](std::string_view key, od::value& v) -> std::string {
    if (key != "rows") return {};
    od::array rows;
    if (v.get_array().get(rows)) return "_all_docs answer: 'rows' is not an array";
    has_rows = true;
    return each_element(rows, "_all_docs row", [&](od::value& rv) -> std::string {
      od::object row;
      if (rv.get_object().get(row)) return "_all_docs row is not an object";
      listed_doc d;
      bool has_id = false;
      std::string e = each_field(row, "_all_docs row", [&](std::string_view k, od::value& fv) -> std::string {
        if (k == "id") {
          std::string_view id;
          if (fv.get_string().get(id)) return "_all_docs row: 'id' is not a string";
          d.id.assign(id);
          has_id = true;
        } else if (k == "doc") {
          document_of(fv, d.doc, d.doc_error);
          if (d.doc_error) wire::malformed(*d.doc_error);
        }
        return {};
      });
      if (!e.empty()) return e;
      if (has_id) out.push_back(std::move(d));  // rows without an id are {key, error} lookups
      return {};
    });
  });
  if (!err.empty()) return malformed(err);
  if (!has_rows) return malformed("_all_docs answer has no rows array");
  return out;
}

namespace {
// {"ok": doc} | {"missing": rev} | {"error": {...}} | {} : one entry.
std::string fetched_of(od::value& ev, const std::string& id, std::vector<fetched_entry>& out) {
  od::object entry;
  if (ev.get_object().get(entry)) return "an entry is not an object";
  fetched_entry fe;
  fe.id = id;
  std::string e = each_field(entry, "entry", [&](std::string_view k, od::value& v) -> std::string {
    if (k != "ok") return {};
    std::optional<std::string> why;
    document_of(v, fe.doc, why);
    if (fe.doc) {
      fe.what = fetched_entry::kind::ok;
      fe.id = fe.doc->id;
    } else {
      fe.what = fetched_entry::kind::unreadable;
      fe.error = why.value_or("document is null");
      wire::malformed(fe.error);
    }
    return {};
  });
  if (!e.empty()) return e;
  out.push_back(std::move(fe));
  return {};
}
}  // namespace

result<std::vector<fetched_entry>> parse_bulk_get(std::string_view body) {
  wire::reader r{std::string(body), wire::reader::role::answer};
  od::object top;
  if (!r.ok() || r.doc().get_object().get(top)) return malformed("_bulk_get answer is not a JSON object");
  std::vector<fetched_entry> out;
  bool has_results = false;
  std::string err = each_field(top, "_bulk_get answer", [&](std::string_view key, od::value& v) -> std::string {
    if (key != "results") return {};
    od::array results;
    if (v.get_array().get(results)) return "_bulk_get answer: 'results' is not an array";
    has_results = true;
    return each_element(results, "_bulk_get result", [&](od::value& rv) -> std::string {
      od::object res;
      if (rv.get_object().get(res)) return "_bulk_get result is not an object";
      std::string id;
      bool has_docs = false;
      std::string e = each_field(res, "_bulk_get result", [&](std::string_view k, od::value& fv) -> std::string {
        if (k == "id") {
          std::string_view s;
          if (fv.get_string().get(s)) return "_bulk_get result: 'id' is not a string";
          id.assign(s);
        } else if (k == "docs") {
          od::array docs;
          if (fv.get_array().get(docs)) return "_bulk_get result: 'docs' is not an array";
          has_docs = true;
          return each_element(docs, "_bulk_get entry", [&](od::value& ev) -> std::string {
            std::string fe = fetched_of(ev, id, out);
            return fe.empty() ? fe : "_bulk_get: " + fe;
          });
        }
        return {};
      });
      if (!e.empty()) return e;
      if (!has_docs) return "_bulk_get result without a docs array";
      return {};
    });
  });
  if (!err.empty()) return malformed(err);
  if (!has_results) return malformed("_bulk_get answer has no results array");
  return out;
}

result<std::vector<fetched_entry>> parse_open_revs(std::string_view body, const std::string& id) {
  wire::reader r{std::string(body), wire::reader::role::answer};
  od::array top;
  if (!r.ok() || r.doc().get_array().get(top)) return malformed("open_revs answer is not a JSON array");
  std::vector<fetched_entry> out;
  std::string err = each_element(top, "open_revs entry", [&](od::value& ev) -> std::string {
    std::string fe = fetched_of(ev, id, out);
    return fe.empty() ? fe : "open_revs: " + fe;
  });
  if (!err.empty()) return malformed(err);
  return out;
}

result<std::vector<write_error>> parse_bulk_docs(std::string_view body) {
  wire::reader r{std::string(body), wire::reader::role::answer};
  od::array top;
  if (!r.ok() || r.doc().get_array().get(top)) return malformed("_bulk_docs answer is not a JSON array");
  std::vector<write_error> out;
  std::string err = each_element(top, "_bulk_docs row", [&](od::value& rv) -> std::string {
    od::object row;
    if (rv.get_object().get(row)) return "_bulk_docs row is not an object";
    write_error w;
    bool has_id = false, has_error = false;
    std::string e = each_field(row, "_bulk_docs row", [&](std::string_view k, od::value& v) -> std::string {
      if (k == "id") {
        std::string_view s;
        if (v.get_string().get(s)) return "_bulk_docs row: 'id' is not a string";
        w.id.assign(s);
        has_id = true;
      } else if (k == "error") {
        w.error = text_value(v);
        has_error = true;
      } else if (k == "reason") {
        w.reason = text_value(v);
      }
      return {};
    });
    if (!e.empty()) return e;
    if (!has_error) return {};
    if (!has_id) return "_bulk_docs error row without an id";
    out.push_back(std::move(w));
    return {};
  });
  if (!err.empty()) return malformed(err);
  return out;
}

result<std::map<std::string, revs_diff_entry>> parse_revs_diff(const json& answer) {
  if (!answer.is_object()) return malformed("_revs_diff answer is not an object");
  std::map<std::string, revs_diff_entry> out;
  for (const auto& [id, entry] : answer.items()) {
    if (!entry.is_object()) continue;
    revs_diff_entry e;
    for (auto [key, list] : {std::pair{"missing", &e.missing}, std::pair{"possible_ancestors", &e.possible_ancestors}}) {
      const json* a = wire::find_array(entry, key);
      if (!a) continue;
      for (const auto& rev : *a) {
        if (rev.is_string()) list->push_back(rev.get<std::string>());
      }
    }
    out.emplace(id, std::move(e));
  }
  return out;
}

std::optional<std::uint64_t> revision_generation(std::string_view rev) {
  const std::size_t dash = rev.find('-');
  if (dash == 0 || dash == std::string_view::npos || dash > 19) return std::nullopt;
  std::uint64_t n = 0;
  for (char c : rev.substr(0, dash)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return n;
}

namespace {
policy::parsed_user user_row(const std::string& id, bool deleted, const std::optional<wire::raw_doc>& doc,
                             const std::optional<std::string>& doc_error) {
  json row{{"id", id}};
  if (id.rfind("_design/", 0) == 0) return policy::parse_user_change(row);
  if (deleted || (doc && doc->deleted)) {
    row["deleted"] = true;
    return policy::parse_user_change(row);
  }
  if (doc_error) return policy::user_doc_error{id, *doc_error};
  if (!doc) return policy::parse_user_change(row);
  if (doc->text.size() > policy::max_user_doc_bytes) {
    return policy::parse_user_doc(json{{"_id", doc->id}}, false, doc->text.size());
  }
  auto parsed = wire::parse(doc->text, "user document");
  if (!parsed.ok()) return policy::user_doc_error{id, parsed.error().reason};
  row["doc"] = std::move(parsed.value());
  return policy::parse_user_change(row);
}
}  // namespace

policy::parsed_user user_of(const feed_change& c) { return user_row(c.id, c.deleted, c.doc, c.doc_error); }
policy::parsed_user user_of(const listed_doc& d) { return user_row(d.id, false, d.doc, d.doc_error); }

}  // namespace couchgate::replicator
