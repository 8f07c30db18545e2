#pragma once
// Test helper: loads one recorded CouchDB exchange from COUCHGATE_TRANSCRIPTS_DIR.
//
// File layout (see the README.md next to the recordings):
//   ### <METHOD> <target>
//   ### curl args: ...
//   <blank>
//   HTTP/1.1 <status> <reason>
//   <header lines>
//   <blank>
//   <body, as curl wrote it: chunked transfer encoding already decoded>
//   "\n" appended by the recorder
//
// The body is returned exactly as the server sent it: with Content-Length, exactly that many
// bytes; without (chunked feeds), everything up to the end of the file minus the recorder's
// final newline, so heartbeat blank lines and several JSON lines (continuous feeds) are kept.
// Any deviation from the layout throws std::runtime_error (a test using it then fails).
#include <map>
#include <string>
#include <vector>

namespace couchgate::test {

struct transcript {
  std::string method;                         // request method, e.g. "GET"
  std::string target;                         // request path + query, e.g. "/_db_updates?feed=normal"
  long status = 0;                            // response status code
  std::map<std::string, std::string> headers; // response headers, keys lowercased, values trimmed
  std::string body;                           // response body (decoded, see above)
};

// file_name is relative to COUCHGATE_TRANSCRIPTS_DIR, e.g. "35-db-updates-normal.http".
transcript load_transcript(const std::string& file_name);

// The body split on '\n' (a trailing '\r' is dropped from each line); blank lines are kept, so
// heartbeats of continuous feeds show up as empty strings. The newline ending the last line does
// not start another (empty) line.
std::vector<std::string> body_lines(const std::string& body);

}  // namespace couchgate::test
