// A rank that stops responding (SIGSTOP: alive, silent) is named by its peer within the collective
// timeout, and the job ends, instead of the peer spinning in MPI forever.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cluster/launcher.hpp"
#include "core/atomic_file.hpp"
#include "core/config.hpp"
#include "rm/train_rm.hpp"
#include "tests/reliability/tiny_training.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;

namespace {

std::string file_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The pid of the `grm train-rm` rank `rank` whose command line names `marker`, or 0.
pid_t find_rank(int rank, const std::string& marker) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string command = file_text(entry.path() / "cmdline"),
                environment = file_text(entry.path() / "environ");
    if (command.find("train-rm") == std::string::npos || command.find(marker) == std::string::npos) continue;
    if (environment.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') !=
        std::string::npos)
      return pid_t(std::stol(name));
  }
  return 0;
}

TEST(Reliability, AStoppedRankIsNamedAndTheJobEnds) {
  auto dir = temp_dir("rank_watchdog");
  grm::TrainRmConfig c = tiny_training(dir, 64, 24);
  c.log_every = 1;
  c.checkpoint_every = 0;
  c.optim.batch_size = 2;
  c.optim.epochs = 500;  // long enough to be stopped in the middle
  grm::write_file_atomic((dir / "c.yaml").string(), grm::dump_config(c));
  fs::path out = dir / "out", log = dir / "log.txt";
  // Launched as the pipeline launches its stages (mpirun with the flags this machine needs: root, 2 cores).
  std::string command = "GRM_COLLECTIVE_TIMEOUT_S=3";
  for (const auto& arg : grm::launch_command(
           "mpirun", 2, {},
           {GRM_BINARY, "train-rm", "--config", (dir / "c.yaml").string(), "--out", out.string()}))
    command += " " + arg;
  command += " > " + log.string() + " 2>&1";
  pid_t job = grm::spawn_process({"sh", "-c", command}, {});
  auto wait_for = [](auto done, int seconds) {  // calls done() until it holds; false after `seconds`
    for (int i = 0; i < seconds * 20; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  ASSERT_TRUE(wait_for([&] { return file_text(log).find("step 3/") != std::string::npos; }, 120))
      << file_text(log);
  pid_t silent = find_rank(1, out.string());
  ASSERT_GT(silent, 0) << "rank 1 not found";
  ::kill(silent, SIGSTOP);
  std::optional<grm::ExitStatus> status;
  bool ended = wait_for([&] { return (status = grm::poll_process(job)).has_value(); }, 60);
  ::kill(silent, SIGKILL);  // whatever mpirun did not end
  if (!ended) {
    ::kill(job, SIGKILL);
    grm::wait_process(job);
  }
  ASSERT_TRUE(ended) << "the job still runs 60 s after rank 1 stopped\n" << file_text(log);
  EXPECT_NE(status->code, 0);
  std::string text = file_text(log);
  EXPECT_NE(text.find("rank 0: waited"), std::string::npos) << text;
  // Named whether it stopped before or inside the collective: by its silence, not by what it announced.
  EXPECT_NE(text.find("for rank 1 (last heard "), std::string::npos) << text;
  EXPECT_NE(text.find("which stopped responding"), std::string::npos) << text;
  fs::remove_all(dir);
}

}  // namespace
