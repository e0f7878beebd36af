#include "cluster/launcher.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.hpp"

extern char** environ;

namespace grm {

namespace {

std::optional<int> env_int(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  char* end = nullptr;
  long number = std::strtol(value, &end, 10);
  if (*end) return std::nullopt;
  return static_cast<int>(number);
}

std::string env_string(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

bool starts_with(const std::string& text, const char* prefix) {
  return text.rfind(prefix, 0) == 0;
}

// Identity of the parent MPI job; OMPI_ALLOW_RUN_AS_ROOT* and user MCA settings are not among them.
bool ties_to_mpi_job(const std::string& name) {
  if (starts_with(name, "PMIX_") || starts_with(name, "PMI_")) return true;
  if (!starts_with(name, "OMPI_")) return false;
  if (starts_with(name, "OMPI_ALLOW_RUN_AS_ROOT")) return false;
  if (starts_with(name, "OMPI_MCA_")) {
    return starts_with(name, "OMPI_MCA_ess") || starts_with(name, "OMPI_MCA_orte") ||
           starts_with(name, "OMPI_MCA_pmix") || starts_with(name, "OMPI_MCA_initial_wdir");
  }
  return true;
}

ExitStatus decode_wait_status(int status) {
  ExitStatus result;
  if (WIFEXITED(status)) {
    result.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
    result.code = 128 + result.signal;
  }
  return result;
}

}  // namespace

ClusterEnv detect_cluster_env() {
  ClusterEnv env;
  if (auto size = env_int("OMPI_COMM_WORLD_SIZE")) {
    env.world_size = *size;
    env.rank = env_int("OMPI_COMM_WORLD_RANK").value_or(0);
  } else if (auto pmi_size = env_int("PMI_SIZE")) {
    env.world_size = *pmi_size;
    env.rank = env_int("PMI_RANK").value_or(0);
  } else if (auto tasks = env_int("SLURM_NTASKS"); tasks && env_int("SLURM_PROCID")) {
    // SLURM_NTASKS alone is set in a batch script too; SLURM_PROCID only inside an srun step.
    env.world_size = *tasks;
    env.rank = *env_int("SLURM_PROCID");
    env.slurm = true;
  }
  if (!env_string("PMIX_NAMESPACE").empty()) {
    env.job_token = env_string("PMIX_NAMESPACE");
  } else if (!env_string("SLURM_JOB_ID").empty()) {
    env.job_token = env_string("SLURM_JOB_ID") + "." + env_string("SLURM_STEP_ID");
  } else {
    env.job_token = env_string("OMPI_MCA_ess_base_jobid");
  }
  return env;
}

std::vector<std::string> launch_command(const std::string& launcher, int ranks,
                                        const std::vector<std::string>& launcher_args,
                                        const std::vector<std::string>& argv) {
  if (std::find(kLaunchers.begin(), kLaunchers.end(), launcher) == kLaunchers.end()) {
    fail("unknown launcher '{}' (known: local, mpirun, srun)", launcher);
  }
  std::vector<std::string> command;
  if (ranks > 1 && launcher == "mpirun") {
    command = {"mpirun", "-np", std::to_string(ranks), "--oversubscribe"};
    if (::geteuid() == 0) command.push_back("--allow-run-as-root");
  } else if (ranks > 1 && launcher == "srun") {
    // --overlap: inside `srun grm run`, the stage's step shares the CPUs the outer step holds.
    command = {"srun", "--overlap", "-n", std::to_string(ranks)};
  }
  if (!command.empty()) command.insert(command.end(), launcher_args.begin(), launcher_args.end());
  command.insert(command.end(), argv.begin(), argv.end());
  return command;
}

pid_t spawn_process(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) fail("spawn_process: empty command");
  std::vector<std::string> environment;
  for (char** entry = environ; *entry; ++entry) {
    std::string variable(*entry);
    std::string name = variable.substr(0, variable.find('='));
    if (options.env.count(name) || (options.detach_from_mpi_job && ties_to_mpi_job(name))) continue;
    environment.push_back(variable);
  }
  for (const auto& [name, value] : options.env) environment.push_back(name + "=" + value);

  std::vector<char*> argv_pointers, env_pointers;
  for (const auto& arg : argv) argv_pointers.push_back(const_cast<char*>(arg.c_str()));
  argv_pointers.push_back(nullptr);
  for (const auto& variable : environment) env_pointers.push_back(const_cast<char*>(variable.c_str()));
  env_pointers.push_back(nullptr);

  // fork + exec rather than posix_spawn, for PR_SET_PDEATHSIG: the child gets SIGTERM when `grm run`
  // dies, even by kill -9, instead of running on as an orphan (mpirun passes the SIGTERM to its ranks).
  // Between fork and exec the child makes only async-signal-safe calls; an exec failure comes back
  // through a close-on-exec pipe.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) fail("cannot start '{}': pipe: {}", argv[0], std::strerror(errno));
  const pid_t parent = ::getpid();
  const char* log_path = options.log_path.empty() ? nullptr : options.log_path.c_str();
  pid_t pid = ::fork();
  if (pid < 0) {
    int saved = errno;
    ::close(report[0]), ::close(report[1]);
    fail("cannot start '{}': fork: {}", argv[0], std::strerror(saved));
  }
  if (pid == 0) {
    ::close(report[0]);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    int in = ::open("/dev/null", O_RDONLY);
    if (in >= 0) ::dup2(in, 0);
    if (log_path) {
      int out = ::open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (out >= 0) ::dup2(out, 1), ::dup2(out, 2);
    }
    ::execvpe(argv_pointers[0], argv_pointers.data(), env_pointers.data());
    int error = errno;
    ssize_t ignored = ::write(report[1], &error, sizeof error);
    (void)ignored;
    ::_exit(127);
  }
  ::close(report[1]);
  int error = 0;
  ssize_t n = 0;
  while ((n = ::read(report[0], &error, sizeof error)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (n == ssize_t(sizeof error)) {
    ::waitpid(pid, nullptr, 0);
    fail("cannot start '{}': {}; is it installed and on PATH?", argv[0], std::strerror(error));
  }
  return pid;
}

std::string ExitStatus::describe() const {
  if (signal != 0) return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "exit code " + std::to_string(code);
}

std::optional<ExitStatus> poll_process(pid_t pid) {
  int status = 0;
  pid_t result = ::waitpid(pid, &status, WNOHANG);
  if (result == 0) return std::nullopt;
  if (result < 0) fail("waitpid({}): {}", pid, std::strerror(errno));
  return decode_wait_status(status);
}

ExitStatus wait_process(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail("waitpid({}): {}", pid, std::strerror(errno));
  }
  return decode_wait_status(status);
}

bool process_running(pid_t pid, const std::string& marker) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) return false;
  std::ifstream file("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  if (!file) return false;
  std::stringstream buffer;
  buffer << file.rdbuf();
  std::string command = buffer.str();
  // A zombie has an empty command line: it has exited, only its parent has not reaped it yet.
  return !command.empty() && command.find(marker) != std::string::npos;
}

std::string host_name() {
  char buffer[256] = {};
  ::gethostname(buffer, sizeof buffer - 1);
  return buffer;
}

}  // namespace grm
