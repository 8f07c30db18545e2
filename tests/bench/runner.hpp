#pragma once
// Owns: one-shot couchgate commands (`restore`, `--version`) as child processes with a deadline:
// unlike test::run_couchgate, the benchmark must end by itself, and it samples the child's pid.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace couchgate::bench {

struct command_result {
  int status = -1;         // exit status; -1 when killed or not started
  bool timed_out = false;
  double seconds = 0;      // wall time from fork to exit
  double cpu_seconds = -1; // the child's user + system CPU (wait4's rusage)
  std::string out, err;
};

// Runs COUCHGATE_BINARY with args; on_start(pid) is called right after the fork. The child is
// killed (SIGKILL) at the deadline or when the benchmark is interrupted.
command_result run_command(const std::vector<std::string>& args, std::chrono::duration<double> deadline,
                           const std::function<void(pid_t)>& on_start = {});

// Creates a directory under /tmp for this run's files; removed by remove_dir.
std::string make_temp_dir(const std::string& stem);
void remove_dir(const std::string& dir);

}  // namespace couchgate::bench
