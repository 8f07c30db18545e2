// couchgate's entry point: everything lives in the gateway library (gateway/cli.hpp).
#include "gateway/cli.hpp"

int main(int argc, char** argv) { return couchgate::gateway::cli_main(argc, argv); }
