// couchgate's entry point: everything lives in the gateway library (gateway/cli.hpp).
#include "gateway/cli.hpp"

#if __has_include(<malloc.h>)
#include <malloc.h>
#endif

int main(int argc, char** argv) {
#if defined(M_MMAP_THRESHOLD)
  // Buffers of 1 MiB and more (attachment bodies, large answers) are mapped apart and given back
  // to the system when freed. glibc's default raises this threshold up to 32 MiB after the first
  // large free, so those bodies then came from per-thread arenas that keep what they once held:
  // six 20 MiB attachments copied one at a time peaked at 290 MiB instead of 126 MiB.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  return couchgate::gateway::cli_main(argc, argv);
}
