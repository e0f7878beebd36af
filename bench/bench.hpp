// Benchmarks: speed measured on the machine they run on, never in timed tests. `grm bench generate |
// tokenize | train-rm | bon | serve` (bench_command.cpp) times grm's own stages; tokenize_bench and
// serve_load are the measuring loops it and tests share; gpu.sh runs them beside a transformers peer.
// bench/ may include every library folder except pipeline/ (it measures stages, not experiments).
#pragma once

namespace CLI {
class App;
}

namespace grm {

void add_bench_command(CLI::App& app);  // `grm bench ...`, wired by pipeline/cli/main.cpp

}  // namespace grm
