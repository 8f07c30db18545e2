// Implementation of a test-owned pouchdb-server (see owned_server.hpp).
#include "tests/support/owned_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace couchgate::test {

namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("owned_server: socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error("owned_server: no free port");
  return ntohs(addr.sin_port);
}

}  // namespace

owned_server::owned_server(std::string pouchdb_server) : bin_(std::move(pouchdb_server)) {
  if (::access(bin_.c_str(), X_OK) != 0)
    throw std::runtime_error("owned_server: " + bin_ + " is missing (tests/server/start-server.sh installs it with npm ci)");
  char tmpl[] = "/tmp/couchgate-owned-server-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("owned_server: mkdtemp failed");
  dir_ = tmpl;
  std::filesystem::create_directories(dir_ + "/data");
  std::mt19937_64 rng(std::random_device{}());
  std::string password;
  for (int i = 0; i < 32; ++i) password.push_back("0123456789abcdef"[rng() % 16]);
  // The server hashes the password into this file at its first start; later starts keep it.
  std::ofstream(dir_ + "/config.json") << "{\"admins\":{\"admin\":\"" << password << "\"},\"log\":{\"file\":\"" << dir_
                                       << "/log.txt\"}}\n";
  env_.host = "127.0.0.1";
  env_.port = free_port();
  env_.url = "http://127.0.0.1:" + std::to_string(env_.port);
  env_.user = "admin";
  env_.password = password;
  env_.pouchdb = true;
  register_basic_secret(env_.user, env_.password);  // the suite's log scan looks for it
  start();
}

owned_server::~owned_server() {
  stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

bool owned_server::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void owned_server::start() {
  if (running()) return;
  const std::string port = std::to_string(env_.port), config = dir_ + "/config.json", data = dir_ + "/data";
  const std::string out = dir_ + "/server.out";
  const pid_t child = fork();
  if (child == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (::chdir(dir_.c_str()) != 0) _exit(127);
    execl(bin_.c_str(), bin_.c_str(), "-n", "--host", "127.0.0.1", "--port", port.c_str(), "--config", config.c_str(),
          "--dir", data.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = child;
  const bool ready = eventually(
      [&] {
        if (!running()) return false;
        httplib::Client cli(env_.host, env_.port);
        cli.set_connection_timeout(1, 0);
        cli.set_read_timeout(2, 0);
        cli.set_basic_auth(env_.user, env_.password);
        auto r = cli.Get("/_session");
        return r && r->status == 200 && r->body.find("_admin") != std::string::npos;
      },
      std::chrono::seconds(30));
  if (!ready) throw std::runtime_error("owned_server: pouchdb-server did not answer within 30 s:\n" + output());
}

void owned_server::stop() {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
}

std::string owned_server::output() const {
  std::ifstream f(dir_ + "/server.out");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  return s.size() > 4000 ? s.substr(s.size() - 4000) : s;
}

}  // namespace couchgate::test
