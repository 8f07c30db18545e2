// Owns: the libFuzzer entry point of one fuzz binary; COUCHGATE_FUZZ_TARGET names the function of
// tests/fuzz/targets.hpp it runs (one binary per target, see tests/fuzz/CMakeLists.txt).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tests/fuzz/targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  couchgate::fuzz::COUCHGATE_FUZZ_TARGET(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
