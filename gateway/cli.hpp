#pragma once
// Owns: the command line: `couchgate run`, `check-config`, `restore`, `health`, `--version`, `--help`.
// main() only calls cli_main; exit codes: 0 success, 1 runtime failure, 2 bad usage or config.
namespace couchgate::gateway {

int cli_main(int argc, char** argv);

}  // namespace couchgate::gateway
