// Test helper: loader for the recorded CouchDB exchanges (see transcript.hpp).
#include "transcript.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

#ifndef COUCHGATE_TRANSCRIPTS_DIR
#error "COUCHGATE_TRANSCRIPTS_DIR must be defined (directory of the recorded .http files)"
#endif

namespace couchgate::test {

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error("transcript " + file + ": " + what);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Reads one '\n'-terminated line starting at pos; pos moves past the '\n'.
bool next_line(const std::string& text, std::size_t& pos, std::string_view& line) {
  if (pos >= text.size()) return false;
  std::size_t nl = text.find('\n', pos);
  if (nl == std::string::npos) nl = text.size();
  line = std::string_view(text).substr(pos, nl - pos);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  pos = nl == text.size() ? nl : nl + 1;
  return true;
}

}  // namespace

transcript load_transcript(const std::string& file_name) {
  const std::string path = std::string(COUCHGATE_TRANSCRIPTS_DIR) + "/" + file_name;
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(file_name, "cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();

  transcript t;
  std::size_t pos = 0;
  std::string_view line;

  // "### METHOD target"
  if (!next_line(text, pos, line) || line.substr(0, 4) != "### ") fail(file_name, "no request line");
  std::string_view req = line.substr(4);
  std::size_t sp = req.find(' ');
  if (sp == std::string_view::npos) fail(file_name, "malformed request line");
  t.method = std::string(req.substr(0, sp));
  t.target = std::string(trim(req.substr(sp + 1)));

  // Further "### ..." comment lines (curl args), then one blank line.
  while (next_line(text, pos, line) && line.substr(0, 3) == "###") {
  }
  if (!line.empty()) fail(file_name, "expected a blank line after the request lines");

  // Status line: "HTTP/1.1 200 OK".
  if (!next_line(text, pos, line) || line.substr(0, 5) != "HTTP/") fail(file_name, "no status line");
  std::size_t s1 = line.find(' ');
  if (s1 == std::string_view::npos) fail(file_name, "malformed status line");
  std::string_view code = line.substr(s1 + 1, 3);
  auto [p, ec] = std::from_chars(code.data(), code.data() + code.size(), t.status);
  if (ec != std::errc() || p != code.data() + code.size()) fail(file_name, "malformed status code");

  // Headers up to the blank line.
  bool blank = false;
  while (next_line(text, pos, line)) {
    if (line.empty()) {
      blank = true;
      break;
    }
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) fail(file_name, "malformed header line");
    t.headers[lower(trim(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
  }
  if (!blank) fail(file_name, "no blank line after the response headers");

  std::string rest = text.substr(pos);
  if (auto it = t.headers.find("content-length"); it != t.headers.end()) {
    std::size_t n = 0;
    const std::string& v = it->second;
    auto [q, ec2] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec2 != std::errc() || q != v.data() + v.size()) fail(file_name, "malformed Content-Length");
    if (rest.size() < n) fail(file_name, "body shorter than Content-Length");
    if (rest.find_first_not_of("\r\n", n) != std::string::npos) fail(file_name, "bytes after the body");
    rest.resize(n);
  } else {
    // curl decoded any chunked encoding; only the recorder's final newline is not the server's.
    if (rest.empty() || rest.back() != '\n') fail(file_name, "missing the recorder's final newline");
    rest.pop_back();
  }
  t.body = std::move(rest);
  return t;
}

std::vector<std::string> body_lines(const std::string& body) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= body.size()) {
    std::size_t nl = body.find('\n', start);
    if (nl == std::string::npos) {
      if (start == body.size()) break;  // the body ended with a newline: no empty last line
      nl = body.size();
    }
    std::string_view l = std::string_view(body).substr(start, nl - start);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    out.emplace_back(l);
    start = nl + 1;
  }
  return out;
}

}  // namespace couchgate::test
