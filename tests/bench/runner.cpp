// Owns: bounded couchgate child processes (see runner.hpp).
#include "tests/bench/runner.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/bench/context.hpp"

namespace couchgate::bench {

namespace {
std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

std::string make_temp_dir(const std::string& stem) {
  std::string tmpl = "/tmp/" + stem + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back(0);
  if (!mkdtemp(buf.data())) return {};
  return std::string(buf.data());
}

void remove_dir(const std::string& dir) {
  if (dir.rfind("/tmp/", 0) != 0) return;  // only what make_temp_dir made
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

command_result run_command(const std::vector<std::string>& args, std::chrono::duration<double> deadline,
                           const std::function<void(pid_t)>& on_start) {
  command_result r;
  std::string dir = make_temp_dir("couchgate-bench-cmd");
  if (dir.empty()) {
    r.err = "mkdtemp failed";
    return r;
  }
  // Everything the child needs is prepared before fork(): other threads may hold malloc's lock.
  std::string out_path = dir + "/out", err_path = dir + "/err";
  std::vector<char*> argv;
  const char* bin = test::couchgate_binary();  // COUCHGATE_TEST_BINARY, else the one built beside the bench
  argv.push_back(const_cast<char*>(bin));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  auto t0 = steady::now();
  pid_t child = fork();
  if (child == 0) {
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(err, 2);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execv(bin, argv.data());
    _exit(127);
  }
  if (child < 0) {
    r.err = "fork failed";
    remove_dir(dir);
    return r;
  }
  if (on_start) on_start(child);
  auto end = t0 + std::chrono::duration_cast<steady::duration>(deadline);
  int status = 0;
  struct rusage ru {};
  for (;;) {
    pid_t w = wait4(child, &status, WNOHANG, &ru);
    if (w == child) {
      r.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                      static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
      break;
    }
    if (steady::now() >= end || interrupted()) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.seconds = seconds_since(t0);
  r.status = !r.timed_out && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(dir + "/out");
  r.err = slurp(dir + "/err");
  remove_dir(dir);
  return r;
}

}  // namespace couchgate::bench
