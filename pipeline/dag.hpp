// The stage DAG and its runner. An experiment becomes a list of stages, each a `grm` subcommand run in
// its own process with its own output directory:
//
//   RUN_DIR/stages/<id>/config.yaml   the planned stage config: every field, inputs still "@NAME/...";
//                                     what the id hashes
//                       config.resolved.yaml  the stage's resolved config, written by the stage itself
//                                     (pipeline/stage_args.hpp): what it ran with, inputs substituted
//                       log.txt       the stage's stdout and stderr, appended on every attempt
//                       pid           "PID HOST" while it runs (for `grm status`)
//                       DONE          written atomically by the runner after the process exits 0
//   RUN_DIR/dag.json                  {"version", "launcher", "max_cores", "updated", "stages": [DagStage]};
//                                     rewritten on every change
//
// A stage runs as
//   GRM_EXE <subcommand> --config <dir>/config.yaml --out <dir> [--input NAME=DIR ...]
// with one `--input` per dependency, in `deps` order, NAME the dependency's stage name; a name may
// repeat (a bon stage gets one `--input proxy_rm=DIR` per proxy RM) and a stage may use the directory's
// base name as the dependency's id. Paths are absolute.
//
// Caching and resume: a stage whose DONE exists is skipped; any other stage is (re)started in the same
// directory, where it resumes from whatever checkpoint it left (a kill -9 included).
//
// Cluster mode: when `grm run` itself is started as K ranks (mpirun -np K / srun -n K; detected from the
// environment), rank 0 walks the DAG, running single-process stages itself and data-parallel stages
// with up to K ranks through the launcher (`mpirun` or `srun --overlap`) inside the allocation; the
// other ranks wait for rank 0's RUN_DIR/.finished marker and exit with its status. Stages are started
// with the parent job's MPI variables removed, so each is a job of its own.
#pragma once

#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json_fwd.hpp>

#include "cluster/launcher.hpp"

namespace grm {

// Where a stage stands. The runner records pending, running, done, failed and skipped in dag.json;
// `interrupted` (recorded running or with a pid file, but its process is gone) is only ever derived by
// read_dag_status.
enum class StageState { pending, running, done, failed, skipped, interrupted };
// The words dag.json, `grm status` and the report use: "pending", "running", ...
const char* to_string(StageState state);
// The inverse of to_string; any other text throws grm::Error naming it and the known states.
StageState stage_state_from_string(const std::string& text);

struct StageSpec {
  std::string name;               // role in the experiment ("gold_rm", "proxy_rm", "bon"); names inputs
  std::string subcommand;         // the grm subcommand that runs it ("train-rm")
  YAML::Node config;              // the planned stage config, written to config.yaml
  std::vector<std::string> deps;  // ids of the stages whose outputs it reads
  int ranks = 1;                  // processes; > 1: data-parallel through the launcher
  int cores = 1;                  // cores per rank (OMP_NUM_THREADS); the budget counts ranks * cores
  int gpus = 0;                   // GPUs for the whole stage, given to it as CUDA_VISIBLE_DEVICES
  std::map<std::string, std::string> labels;  // sweep labels (method, alpha, size, seed) for reports
  std::string id;                             // "<name>-<hash>", set by add_stage
};

// "<name>-<16 hex>": hashes the subcommand, the config and the dependencies' ids (which hash theirs),
// so a changed value re-runs the stage and everything downstream of it. Resources (ranks, cores) and
// labels are not hashed: they do not change what the stage computes.
std::string stage_id(const StageSpec& spec);

// Appends the stage unless an identical one (same id) is already listed: sweep points share stages.
// Labels of a shared stage keep only the values all its sweep points agree on. Returns the id.
// Dependencies must already be in the list, which keeps the list in a valid run order.
std::string add_stage(std::vector<StageSpec>& stages, StageSpec spec);

std::string stage_dir(const std::string& run_dir, const std::string& id);

struct RunOptions {
  std::string run_dir;
  std::string grm_exe;                     // the executable each stage runs (argv[0] of the stage)
  std::string launcher = "mpirun";         // local | mpirun | srun; see cluster/launcher.hpp
  std::vector<std::string> launcher_args;  // extra arguments for mpirun/srun (e.g. --hostfile h)
  int max_cores = 0;                       // core budget for concurrent stages; 0: all hardware cores
  // GPUs 0..gpus-1 are shared out among concurrent stages; stages without `gpus` see none. 0: no GPU
  // accounting, CUDA_VISIBLE_DEVICES is left as it is.
  int gpus = 0;
  int np = 0;                   // most ranks a stage gets; 0: the job's size in cluster mode, else max_cores
  bool dry_run = false;         // print the commands of stages that would run, run nothing
  std::ostream* out = nullptr;  // progress; nullptr: stdout
  // Redraw a status line in place. Set it for a terminal, and not under mpirun, which hands its ranks a
  // pseudo-terminal even when its own output goes to a file:
  //   live = isatty(STDOUT_FILENO) && cluster.world_size == 1
  bool live = false;
  ClusterEnv cluster = detect_cluster_env();
};

struct StageOutcome {
  std::string id;
  StageState state = StageState::pending;  // done, failed, skipped; pending: dry run, or not reached
  bool cached = false;                     // DONE was already there
  ExitStatus exit;
  double seconds = 0;
  std::string dir;
  std::vector<std::string> command;
};

struct RunResult {
  bool ok = false;  // every stage done
  std::vector<StageOutcome> stages;
  std::string summary;  // printed at the end: counts, each failure with its log path and last lines
};

// Runs the stages (in dependency order, concurrently within the core budget). A failed stage makes its
// dependants `skipped`; independent stages still finish. Throws grm::Error for an invalid DAG or when
// another `grm run` holds the run directory.
RunResult run_dag(const std::vector<StageSpec>& stages, const RunOptions& options);

// One stage of RUN_DIR/dag.json: what the runner writes, and what `grm status` and the report read.
struct DagStage {
  std::string id, name, subcommand;
  std::vector<std::string> deps;  // ids, in `--input` order
  std::map<std::string, std::string> labels;
  int ranks = 1, cores = 1;
  StageState state = StageState::pending;  // as the runner last recorded it
  bool cached = false;                     // DONE was there before this run
  ExitStatus exit;                         // of a finished or failed process ("exit_code", "signal")
  double seconds = 0;
  std::string skipped_because;  // a skipped stage: the failed stage upstream of it
  std::string dir;              // relative to the run directory: "stages/<id>"
};
void to_json(nlohmann::json& json, const DagStage& stage);
// Only "id" is required: a dag.json written by hand or by an older grm may leave out any other field,
// which then keeps its default above (dir: "stages/<id>"). An unknown state is an error.
void from_json(const nlohmann::json& json, DagStage& stage);

// The stages of RUN_DIR/dag.json in run order, through from_json. Throws grm::Error naming the file when
// it is missing or not a dag.json, and the stage when one cannot be read.
std::vector<DagStage> read_dag(const std::string& run_dir);

// A dag.json stage with its state made live from the markers on disk: DONE, a pid file whose process
// runs (running), or one whose process is gone (interrupted).
struct StageStatus : DagStage {
  std::string detail;  // exit status, pid and host, or the last log line of a running stage
};
std::vector<StageStatus> read_dag_status(const std::string& run_dir);
std::string format_dag_status(const std::vector<StageStatus>& stages);

}  // namespace grm
