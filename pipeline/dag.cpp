#include "pipeline/dag.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/config.hpp"
#include "core/error.hpp"

namespace grm {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Starts the line the runner writes into a stage's log before each attempt.
constexpr const char* kAttemptHeader = "=== grm run";

std::string absolute_path(const std::string& path) {
  return fs::absolute(path).lexically_normal().string();
}

std::string wall_time() {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%H:%M:%S", &local);
  return buffer;
}

std::string format_seconds(double seconds) {
  int whole = static_cast<int>(seconds);
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  if (seconds < 3600) return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{}h{:02}m", whole / 3600, whole / 60 % 60);
}

std::string format_labels(const std::map<std::string, std::string>& labels) {
  std::string text;
  for (const auto& [key, value] : labels) text += (text.empty() ? "" : " ") + key + "=" + value;
  return text;
}

std::string join_command(const std::vector<std::string>& command) {
  std::string text;
  for (const auto& arg : command) {
    bool plain = !arg.empty() && arg.find_first_of(" \t'\"$\\") == std::string::npos;
    text += (text.empty() ? "" : " ") + (plain ? arg : "'" + arg + "'");
  }
  return text;
}

// The last `count` non-empty lines of a (possibly large) log; only its tail is read.
std::vector<std::string> last_lines(const std::string& path, std::size_t count) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return {};
  file.seekg(0, std::ios::end);
  std::streamoff size = file.tellg();
  std::streamoff start = std::max<std::streamoff>(0, size - 16384);
  file.seekg(start);
  std::string tail(static_cast<std::size_t>(size - start), '\0');
  file.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  std::vector<std::string> lines;
  std::size_t begin = 0;
  while (begin < tail.size()) {
    std::size_t end = tail.find('\n', begin);
    if (end == std::string::npos) end = tail.size();
    std::string line = tail.substr(begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // A progress bar redraws with \r; the text after the last one is what a terminal would show.
    if (auto cr = line.rfind('\r'); cr != std::string::npos) line = line.substr(cr + 1);
    if (!line.empty()) lines.push_back(line);
    begin = end + 1;
  }
  if (lines.size() > count) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(count));
  return lines;
}

std::size_t terminal_columns() {
  winsize size{};
  return ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 20 ? size.ws_col : 120;
}

struct PidFile {
  pid_t pid = 0;
  std::string host;
};

std::optional<PidFile> read_pid_file(const std::string& dir) {
  std::ifstream file(dir + "/pid");
  PidFile pid_file;
  if (!(file >> pid_file.pid >> pid_file.host)) return std::nullopt;
  return pid_file;
}

// Held for the whole run so two `grm run` on one directory cannot start the same stage twice. flock is
// released by the kernel when the process dies, so a crashed run never leaves a stale lock.
class RunLock {
 public:
  explicit RunLock(const std::string& run_dir) {
    std::string path = run_dir + "/.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("{}: cannot create ({})", path, std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char holder[32] = {};
      ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
      ::close(fd_);
      fail("{}: another grm run (pid {}) is using this run directory; wait for it or stop it", run_dir,
           n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : "unknown");
    }
    // The pid only makes the message above more helpful; failing to record it is harmless.
    std::string pid = std::to_string(::getpid());
    [[maybe_unused]] bool recorded = ::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) > 0;
  }
  ~RunLock() { ::close(fd_); }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

struct Node {
  const StageSpec* spec = nullptr;
  std::vector<std::size_t> deps;  // indices into the stage list
  std::string dir;
  StageState state = StageState::pending;
  bool cached = false;
  pid_t pid = 0;
  int ranks = 1;
  int cores_needed = 1;
  int gpus_needed = 0;
  std::vector<int> gpu_ids;  // held while running
  Clock::time_point started;
  ExitStatus exit;
  double seconds = 0;
  std::vector<std::string> command;
  std::string skipped_because;
};

class Runner {
 public:
  Runner(const std::vector<StageSpec>& stages, const RunOptions& options) : options_(options) {
    out_ = options.out ? options.out : &std::cout;
    if (options.grm_exe.empty())
      fail("run_dag: RunOptions.grm_exe is empty; pass the path of the grm executable");
    if (std::find(kLaunchers.begin(), kLaunchers.end(), options.launcher) == kLaunchers.end()) {
      fail("unknown launcher '{}' (known: local, mpirun, srun)", options.launcher);
    }
    run_dir_ = absolute_path(options.run_dir);
    max_cores_ = options.max_cores > 0 ? options.max_cores
                                       : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    np_ = options.np > 0                   ? options.np
          : options.cluster.world_size > 1 ? options.cluster.world_size
                                           : max_cores_;
    gpu_free_.assign(std::max(0, options.gpus), true);
    build_nodes(stages);
  }

  RunResult run() {
    if (options_.dry_run) return dry_run();
    fs::create_directories(run_dir_ + "/stages");
    RunLock lock(run_dir_);
    find_finished_and_orphans();
    std::size_t cached = std::count_if(nodes_.begin(), nodes_.end(), [](const Node& n) { return n.cached; });
    if (cached) event(fmt::format("{} of {} stages already done (cached)", cached, nodes_.size()));
    write_dag_json();
    while (true) {
      bool changed = reap_finished();
      changed |= skip_dependants_of_failures();
      changed |= launch_ready();
      if (changed) write_dag_json();
      if (used_cores_ == 0) break;
      draw_status_line();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    clear_status_line();
    return result();
  }

 private:
  void build_nodes(const std::vector<StageSpec>& stages) {
    std::map<std::string, std::size_t> index;
    for (const auto& spec : stages) {
      if (spec.id.empty() || spec.id != stage_id(spec)) {
        fail("stage '{}': its id '{}' does not match its config; build the stage list with add_stage",
             spec.name, spec.id);
      }
      if (index.count(spec.id))
        fail("stage '{}' is listed twice; build the stage list with add_stage", spec.id);
      Node node;
      node.spec = &spec;
      node.dir = stage_dir(run_dir_, spec.id);
      for (const auto& dep : spec.deps) {
        auto found = index.find(dep);
        if (found == index.end())
          fail("stage '{}' depends on '{}', which is not listed before it", spec.id, dep);
        node.deps.push_back(found->second);
      }
      node.ranks = options_.launcher == "local" ? 1 : std::clamp(spec.ranks, 1, np_);
      node.cores_needed = std::clamp(node.ranks * std::max(1, spec.cores), 1, max_cores_);
      node.gpus_needed = std::clamp(spec.gpus, 0, std::max(0, options_.gpus));
      index[spec.id] = nodes_.size();
      nodes_.push_back(std::move(node));
    }
  }

  void find_finished_and_orphans() {
    for (auto& node : nodes_) {
      if (fs::exists(node.dir + "/DONE")) {
        node.state = StageState::done;
        node.cached = true;
        continue;
      }
      auto pid_file = read_pid_file(node.dir);
      if (pid_file && pid_file->host == host_name() && process_running(pid_file->pid, node.dir)) {
        fail("stage {} is still running as pid {}, started by an earlier grm run; wait for it or kill it",
             node.spec->id, pid_file->pid);
      }
    }
  }

  std::vector<std::string> stage_command(const Node& node) const {
    const StageSpec& spec = *node.spec;
    std::vector<std::string> argv = {options_.grm_exe,          spec.subcommand, "--config",
                                     node.dir + "/config.yaml", "--out",         node.dir};
    for (std::size_t dep : node.deps) {
      argv.push_back("--input");
      argv.push_back(nodes_[dep].spec->name + "=" + nodes_[dep].dir);
    }
    return launch_command(options_.launcher, node.ranks, options_.launcher_args, argv);
  }

  RunResult dry_run() {
    for (auto& node : nodes_) {
      if (fs::exists(node.dir + "/DONE")) {
        node.state = StageState::done;
        node.cached = true;
        continue;
      }
      node.command = stage_command(node);
      *out_ << "would run " << node.spec->id << ": " << join_command(node.command) << "\n";
    }
    RunResult result = this->result();
    result.ok = true;
    return result;
  }

  bool reap_finished() {
    bool changed = false;
    for (auto& node : nodes_) {
      if (node.state != StageState::running) continue;
      auto status = poll_process(node.pid);
      if (!status) continue;
      changed = true;
      used_cores_ -= node.cores_needed;
      for (int gpu : node.gpu_ids) gpu_free_[gpu] = true;
      node.gpu_ids.clear();
      node.exit = *status;
      node.seconds = std::chrono::duration<double>(Clock::now() - node.started).count();
      fs::remove(node.dir + "/pid");
      if (status->ok()) {
        json done = {{"id", node.spec->id}, {"seconds", node.seconds}, {"finished", std::time(nullptr)}};
        write_file_atomic(node.dir + "/DONE", done.dump() + "\n");
        node.state = StageState::done;
        event(fmt::format("done    {} in {}", node.spec->id, format_seconds(node.seconds)));
      } else {
        node.state = StageState::failed;
        event(fmt::format("FAILED  {} ({}) after {}; log: {}/log.txt", node.spec->id, status->describe(),
                          format_seconds(node.seconds), node.dir));
      }
    }
    return changed;
  }

  // Dependencies come earlier in the list, so one pass in order propagates skips transitively.
  bool skip_dependants_of_failures() {
    bool changed = false;
    for (auto& node : nodes_) {
      if (node.state != StageState::pending) continue;
      for (std::size_t dep : node.deps) {
        const Node& upstream = nodes_[dep];
        if (upstream.state != StageState::failed && upstream.state != StageState::skipped) continue;
        node.state = StageState::skipped;
        node.skipped_because =
            upstream.state == StageState::failed ? upstream.spec->id : upstream.skipped_because;
        event(fmt::format("skip    {} (needs {}, which failed)", node.spec->id, node.skipped_because));
        changed = true;
        break;
      }
    }
    return changed;
  }

  bool launch_ready() {
    bool changed = false;
    for (auto& node : nodes_) {
      if (node.state != StageState::pending) continue;
      bool ready = std::all_of(node.deps.begin(), node.deps.end(),
                               [&](std::size_t dep) { return nodes_[dep].state == StageState::done; });
      // A stage larger than the free budget waits; it runs alone if it is larger than the whole budget.
      if (!ready || (used_cores_ > 0 && used_cores_ + node.cores_needed > max_cores_)) continue;
      if (std::count(gpu_free_.begin(), gpu_free_.end(), true) < node.gpus_needed) continue;
      launch(node);
      changed = true;
    }
    return changed;
  }

  void launch(Node& node) {
    const StageSpec& spec = *node.spec;
    fs::create_directories(node.dir);
    write_file_atomic(node.dir + "/config.yaml", dump_yaml(spec.config));
    node.command = stage_command(node);
    append_line(node.dir + "/log.txt", fmt::format("{} {} on {}: {}", kAttemptHeader, wall_time(),
                                                   host_name(), join_command(node.command)));
    SpawnOptions spawn;
    spawn.log_path = node.dir + "/log.txt";
    spawn.env["OMP_NUM_THREADS"] = std::to_string(std::max(1, spec.cores));
    spawn.detach_from_mpi_job = true;
    if (options_.gpus > 0) {
      for (int gpu = 0; gpu < options_.gpus && static_cast<int>(node.gpu_ids.size()) < node.gpus_needed;
           ++gpu) {
        if (gpu_free_[gpu]) node.gpu_ids.push_back(gpu);
      }
      spawn.env["CUDA_VISIBLE_DEVICES"] = fmt::format("{}", fmt::join(node.gpu_ids, ","));
    }
    node.started = Clock::now();
    try {
      node.pid = spawn_process(node.command, spawn);
    } catch (const Error& error) {
      // Like a stage that failed at once: its dependants are skipped, the others still run.
      append_line(node.dir + "/log.txt", error.what());
      node.state = StageState::failed;
      node.gpu_ids.clear();
      node.exit = ExitStatus{127, 0};
      event(fmt::format("FAILED  {} ({})", spec.id, error.what()));
      return;
    }
    node.state = StageState::running;
    used_cores_ += node.cores_needed;
    for (int gpu : node.gpu_ids) gpu_free_[gpu] = false;
    write_file_atomic(node.dir + "/pid", fmt::format("{} {}\n", node.pid, host_name()));
    std::string resources = node.ranks > 1 ? fmt::format(" ({} ranks)", node.ranks) : "";
    std::string labels = format_labels(spec.labels);
    event(fmt::format("start   {}{}{}", spec.id, resources, labels.empty() ? "" : " [" + labels + "]"));
  }

  void event(const std::string& message) {
    clear_status_line();
    *out_ << wall_time() << " " << message << std::endl;
  }

  // One line, redrawn in place at most four times a second: counts, then each running stage with its
  // time and the last line of its log (where stages print their progress).
  void draw_status_line() {
    if (!options_.live || Clock::now() - last_drawn_ < std::chrono::milliseconds(250)) return;
    last_drawn_ = Clock::now();
    std::size_t done = 0, failed = 0;
    std::string running;
    for (const auto& node : nodes_) {
      done += node.state == StageState::done;
      failed += node.state == StageState::failed;
      if (node.state != StageState::running) continue;
      double seconds = std::chrono::duration<double>(Clock::now() - node.started).count();
      std::string id = node.spec->id.substr(0, node.spec->name.size() + 5);
      auto lines = last_lines(node.dir + "/log.txt", 1);
      bool header = lines.empty() || lines.back().rfind(kAttemptHeader, 0) == 0;
      running += fmt::format(" | {} {}{}", id, format_seconds(seconds), header ? "" : ": " + lines.back());
    }
    std::string line = fmt::format("[{}/{} done{}]{}", done, nodes_.size(),
                                   failed ? fmt::format(", {} failed", failed) : "", running);
    std::size_t width = terminal_columns() - 1;
    if (line.size() > width) line = line.substr(0, width - 3) + "...";
    *out_ << "\r\033[K" << line << std::flush;
    status_line_shown_ = true;
  }

  void clear_status_line() {
    if (!status_line_shown_) return;
    *out_ << "\r\033[K" << std::flush;
    status_line_shown_ = false;
  }

  void write_dag_json() const {
    json stages = json::array();
    for (const auto& node : nodes_) {
      const StageSpec& spec = *node.spec;
      DagStage stage;
      stage.id = spec.id;
      stage.name = spec.name;
      stage.subcommand = spec.subcommand;
      for (std::size_t dep : node.deps) stage.deps.push_back(nodes_[dep].spec->id);
      stage.labels = spec.labels;
      stage.ranks = node.ranks;
      stage.cores = spec.cores;
      stage.state = node.state;
      stage.cached = node.cached;
      stage.exit = node.exit;
      stage.seconds = node.seconds;
      stage.skipped_because = node.skipped_because;
      stage.dir = "stages/" + spec.id;
      stages.push_back(stage);
    }
    json dag = {{"version", 1},
                {"launcher", options_.launcher},
                {"max_cores", max_cores_},
                {"updated", std::time(nullptr)},
                {"stages", stages}};
    write_file_atomic(run_dir_ + "/dag.json", dag.dump(1) + "\n");
  }

  RunResult result() const {
    RunResult result;
    std::map<StageState, int> counts;
    int cached = 0;
    std::string failures;
    for (const auto& node : nodes_) {
      StageOutcome outcome{node.spec->id, node.state, node.cached, node.exit,
                           node.seconds,  node.dir,   node.command};
      result.stages.push_back(outcome);
      ++counts[node.state];
      cached += node.cached;
      if (node.state != StageState::failed) continue;
      failures +=
          fmt::format("FAILED {}: {}; log: {}/log.txt\n", node.spec->id, node.exit.describe(), node.dir);
      for (const auto& line : last_lines(node.dir + "/log.txt", 5)) {
        if (line.rfind(kAttemptHeader, 0) != 0) failures += "  | " + line + "\n";
      }
      std::vector<std::string> skipped;
      for (const auto& other : nodes_) {
        if (other.skipped_because == node.spec->id) skipped.push_back(other.spec->id);
      }
      if (!skipped.empty())
        failures += fmt::format("  skipped because of it: {}\n", fmt::join(skipped, ", "));
    }
    result.ok = counts[StageState::done] == static_cast<int>(nodes_.size());
    result.summary = fmt::format("{} stages: {} done ({} cached), {} failed, {} skipped, {} pending\n{}",
                                 nodes_.size(), counts[StageState::done], cached, counts[StageState::failed],
                                 counts[StageState::skipped], counts[StageState::pending], failures);
    return result;
  }

  const RunOptions& options_;
  std::ostream* out_;
  std::string run_dir_;
  int max_cores_ = 1;
  int np_ = 1;
  int used_cores_ = 0;
  std::vector<bool> gpu_free_;
  bool status_line_shown_ = false;
  Clock::time_point last_drawn_;
  std::vector<Node> nodes_;
};

// Rank 0's verdict for the other ranks of a cluster-mode run: {"token": job token, "ok": bool}.
std::string finished_marker(const std::string& run_dir) {
  return run_dir + "/.finished";
}

RunResult wait_for_rank_zero(const RunOptions& options) {
  std::string marker = finished_marker(options.run_dir);
  auto started = fs::file_time_type::clock::now();
  while (true) {
    std::error_code error;
    auto written = fs::last_write_time(marker, error);
    if (!error) {
      json verdict = json::parse(read_file(marker), nullptr, false);
      bool ours = !verdict.is_discarded() && (options.cluster.job_token.empty()
                                                  ? written >= started
                                                  : verdict.value("token", "") == options.cluster.job_token);
      if (ours) {
        RunResult result;
        result.ok = verdict.value("ok", false);
        result.summary = fmt::format("rank {}: rank 0 finished the DAG ({})\n", options.cluster.rank,
                                     result.ok ? "ok" : "with failures");
        return result;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace

std::string stage_id(const StageSpec& spec) {
  std::string text = spec.name + "\n" + spec.subcommand + "\n" + dump_yaml(spec.config);
  for (const auto& dep : spec.deps) text += "dep " + dep + "\n";
  return spec.name + "-" + stable_hash(text);
}

std::string add_stage(std::vector<StageSpec>& stages, StageSpec spec) {
  for (const auto& dep : spec.deps) {
    bool listed = std::any_of(stages.begin(), stages.end(), [&](const StageSpec& s) { return s.id == dep; });
    if (!listed)
      fail("stage '{}' depends on '{}', which has not been added; add dependencies first", spec.name, dep);
  }
  spec.id = stage_id(spec);
  for (auto& existing : stages) {
    if (existing.id != spec.id) continue;
    for (auto it = existing.labels.begin(); it != existing.labels.end();) {
      auto other = spec.labels.find(it->first);
      it = other != spec.labels.end() && other->second == it->second ? std::next(it)
                                                                     : existing.labels.erase(it);
    }
    return existing.id;
  }
  stages.push_back(std::move(spec));
  return stages.back().id;
}

std::string stage_dir(const std::string& run_dir, const std::string& id) {
  return absolute_path(run_dir) + "/stages/" + id;
}

RunResult run_dag(const std::vector<StageSpec>& stages, const RunOptions& options) {
  if (options.cluster.world_size > 1 && options.cluster.rank != 0) return wait_for_rank_zero(options);
  bool rank_zero_of_job = options.cluster.world_size > 1 && !options.dry_run;
  auto tell_other_ranks = [&](bool ok) {
    json verdict = {{"token", options.cluster.job_token}, {"ok", ok}};
    write_file_atomic(finished_marker(options.run_dir), verdict.dump() + "\n");
  };
  try {
    RunResult result = Runner(stages, options).run();
    *(options.out ? options.out : &std::cout) << result.summary << std::flush;
    if (rank_zero_of_job) tell_other_ranks(result.ok);
    return result;
  } catch (...) {
    if (rank_zero_of_job) tell_other_ranks(false);
    throw;
  }
}

namespace {

// Every state, in the order `grm status` counts them.
constexpr StageState kStates[] = {StageState::done,    StageState::running,     StageState::failed,
                                  StageState::skipped, StageState::interrupted, StageState::pending};

}  // namespace

const char* to_string(StageState state) {
  switch (state) {
    case StageState::pending:
      return "pending";
    case StageState::running:
      return "running";
    case StageState::done:
      return "done";
    case StageState::failed:
      return "failed";
    case StageState::skipped:
      return "skipped";
    case StageState::interrupted:
      return "interrupted";
  }
  fail("stage state {} is not one of the StageState values", static_cast<int>(state));
}

StageState stage_state_from_string(const std::string& text) {
  std::vector<std::string> known;
  for (StageState state : kStates) {
    if (text == to_string(state)) return state;
    known.push_back(to_string(state));
  }
  fail("unknown stage state '{}' (known: {})", text, fmt::join(known, ", "));
}

void to_json(json& out, const DagStage& stage) {
  out = {{"id", stage.id},
         {"name", stage.name},
         {"subcommand", stage.subcommand},
         {"deps", stage.deps},
         {"labels", stage.labels},
         {"ranks", stage.ranks},
         {"cores", stage.cores},
         {"state", to_string(stage.state)},
         {"cached", stage.cached},
         {"exit_code", stage.exit.code},
         {"signal", stage.exit.signal},
         {"seconds", stage.seconds},
         {"skipped_because", stage.skipped_because},
         {"dir", stage.dir}};
}

void from_json(const json& in, DagStage& stage) {
  const DagStage defaults;
  stage.id = in.at("id").get<std::string>();
  stage.name = in.value("name", defaults.name);
  stage.subcommand = in.value("subcommand", defaults.subcommand);
  stage.deps = in.value("deps", defaults.deps);
  stage.labels = in.value("labels", defaults.labels);
  stage.ranks = in.value("ranks", defaults.ranks);
  stage.cores = in.value("cores", defaults.cores);
  stage.state = stage_state_from_string(in.value("state", std::string(to_string(defaults.state))));
  stage.cached = in.value("cached", defaults.cached);
  stage.exit =
      ExitStatus{in.value("exit_code", defaults.exit.code), in.value("signal", defaults.exit.signal)};
  stage.seconds = in.value("seconds", defaults.seconds);
  stage.skipped_because = in.value("skipped_because", defaults.skipped_because);
  stage.dir = in.value("dir", "stages/" + stage.id);
}

std::vector<DagStage> read_dag(const std::string& run_dir) {
  std::string path = run_dir + "/dag.json";
  if (!fs::exists(path))
    fail("{}: not found; is {} a grm run directory? (grm run writes dag.json)", path, run_dir);
  json dag = json::parse(read_file(path), nullptr, false);
  if (dag.is_discarded() || !dag.is_object() || !dag.contains("stages") || !dag["stages"].is_array())
    fail("{}: not a valid dag.json; re-run grm run", path);
  std::vector<DagStage> stages;
  for (const auto& entry : dag["stages"]) {
    try {
      stages.push_back(entry.get<DagStage>());
    } catch (const std::exception& error) {  // grm::Error (the state) or a json type or key error
      fail("{}: stage {} of {}: {}", path, stages.size() + 1, dag["stages"].size(), error.what());
    }
  }
  return stages;
}

std::vector<StageStatus> read_dag_status(const std::string& run_dir) {
  std::vector<StageStatus> result;
  for (auto& stage : read_dag(run_dir)) {
    StageStatus status{std::move(stage), ""};
    std::string dir = run_dir + "/" + status.dir;
    StageState recorded = status.state;
    auto pid_file = read_pid_file(dir);
    if (fs::exists(dir + "/DONE")) {
      status.state = StageState::done;
    } else if (pid_file && pid_file->host != host_name()) {
      status.state = StageState::running;
      status.detail = fmt::format("pid {} on {}", pid_file->pid, pid_file->host);
    } else if (pid_file && process_running(pid_file->pid, absolute_path(dir))) {
      status.state = StageState::running;
      auto lines = last_lines(dir + "/log.txt", 1);
      status.detail = fmt::format("pid {}{}", pid_file->pid, lines.empty() ? "" : ": " + lines.back());
    } else if (recorded == StageState::failed) {
      status.detail = status.exit.describe() + "; log: " + dir + "/log.txt";
    } else if (recorded == StageState::skipped) {
      status.detail = "needs " + (status.skipped_because.empty() ? "a failed stage" : status.skipped_because);
    } else if (recorded == StageState::running || pid_file) {
      status.state = StageState::interrupted;
      status.detail = "its process is gone; grm run resumes it";
    } else {
      status.state = StageState::pending;
    }
    result.push_back(std::move(status));
  }
  return result;
}

std::string format_dag_status(const std::vector<StageStatus>& stages) {
  std::map<StageState, int> counts;
  std::map<std::string, std::string> names;
  std::size_t id_width = 5, label_width = 6;
  for (const auto& stage : stages) {
    ++counts[stage.state];
    names[stage.id] = stage.name;
    id_width = std::max(id_width, stage.id.size());
    label_width = std::max(label_width, format_labels(stage.labels).size());
  }
  std::string text = fmt::format("{} stages:", stages.size());
  for (StageState state : kStates) {
    if (counts[state]) text += fmt::format(" {} {}", counts[state], to_string(state));
  }
  text += fmt::format("\n{:<12}{:<{}}  {:<{}}  {}\n", "STATE", "STAGE", id_width, "LABELS", label_width,
                      "NEEDS / DETAIL");
  for (const auto& stage : stages) {
    // Dependencies by stage name with counts: a bon stage may need dozens of proxy RMs.
    std::map<std::string, int> needs;
    for (const auto& dep : stage.deps) ++needs[names.count(dep) ? names[dep] : dep];
    std::string needs_text;
    for (const auto& [name, count] : needs) {
      needs_text += (needs_text.empty() ? "" : ", ") + name + (count > 1 ? fmt::format(" x{}", count) : "");
    }
    std::string detail = needs_text.empty()     ? stage.detail
                         : stage.detail.empty() ? needs_text
                                                : needs_text + "; " + stage.detail;
    text += fmt::format("{:<12}{:<{}}  {:<{}}  {}\n", to_string(stage.state), stage.id, id_width,
                        format_labels(stage.labels), label_width, detail);
  }
  return text;
}

}  // namespace grm
