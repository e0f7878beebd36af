// Launchers: how a stage's process is started. A single-process stage is a plain exec; a data-parallel
// stage with K ranks goes through `mpirun -np K` or `srun -n K`. Also: what this process learns about
// its own MPI/Slurm job from the environment (without linking MPI), and process liveness checks.
// Depends on nothing but POSIX; knows nothing of models or of the pipeline.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace grm {

inline const std::vector<std::string> kLaunchers = {"local", "mpirun", "srun"};

// The job this process belongs to when started by mpirun/srun; world_size 1 otherwise.
struct ClusterEnv {
  int rank = 0;
  int world_size = 1;
  // Same on every rank of one job and different between jobs (PMIx namespace, Slurm job.step), so
  // ranks can tell a marker file written by this job's rank 0 from a stale one.
  std::string job_token;
  bool slurm = false;  // started by srun rather than mpirun
};
ClusterEnv detect_cluster_env();

// The command line that starts `argv` with `ranks` processes through `launcher` ("local" always runs
// one process). `launcher_args` go right after the launcher's own options (e.g. --hostfile h).
std::vector<std::string> launch_command(const std::string& launcher, int ranks,
                                        const std::vector<std::string>& launcher_args,
                                        const std::vector<std::string>& argv);

struct SpawnOptions {
  std::string log_path;                    // stdout and stderr are appended here
  std::map<std::string, std::string> env;  // set (overriding) in the child's environment
  // Drop the variables that tie a process to the MPI job of its parent (OMPI_*, PMIX_*, PMI_*), so a
  // stage started from inside `mpirun grm run` is a job of its own rather than a confused member.
  bool detach_from_mpi_job = false;
};
// Starts the process (PATH is searched) and returns its pid; throws grm::Error if it cannot start. The
// child is sent SIGTERM when the calling thread's process dies (Linux PR_SET_PDEATHSIG), so stages end
// with the `grm run` that started them.
pid_t spawn_process(const std::vector<std::string>& argv, const SpawnOptions& options);

struct ExitStatus {
  int code = 0;    // exit code, or 128 + signal
  int signal = 0;  // the signal that killed it, 0 if it exited
  bool ok() const { return code == 0 && signal == 0; }
  std::string describe() const;  // "exit code 1", "killed by signal 9 (Killed)"
};
// Non-blocking: the exit status if the child has finished (and is reaped), nothing if still running.
std::optional<ExitStatus> poll_process(pid_t pid);
// Blocks until the child exits.
ExitStatus wait_process(pid_t pid);

// Whether `pid` is alive on this host and its command line contains `marker` (guards against pid reuse).
bool process_running(pid_t pid, const std::string& marker);

std::string host_name();

}  // namespace grm
