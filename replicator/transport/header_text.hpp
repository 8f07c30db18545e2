#pragma once
// Owns: the small text rules of HTTP header values that every reader of a header shares: optional
// white space around a value, and ASCII case-insensitive names, schemes and tokens (RFC 9110
// §5.6.3, §5.1). Header values are bytes, not UTF-8: only A–Z fold, nothing else changes.
#include <string>
#include <string_view>

namespace couchgate::replicator {

// `v` without the optional white space around it: spaces and tabs, and a line's CR/LF (curl's
// header callback hands over the line ending with the line).
std::string_view trim_ows(std::string_view v);
// `v` with A–Z folded to a–z; every other byte as it came.
std::string lower_ascii(std::string_view v);
// Whether `s` begins with `lower_prefix` (given in lower case), ignoring ASCII case in `s`.
bool starts_with_ascii_ci(std::string_view s, std::string_view lower_prefix);

}  // namespace couchgate::replicator
