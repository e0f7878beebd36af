// A full disk is an error naming the file and the cause, never an abort or a torn artifact: files and
// directories are complete or absent. The disk fills for real on a small tmpfs where the machine lets the
// test mount one (ENOSPC), otherwise through the file-size limit (RLIMIT_FSIZE: EFBIG), which needs no
// privileges.
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/config.hpp"
#include "rm/train_rm.hpp"
#include "tests/reliability/tiny_training.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;

namespace {

// Writes in this process fail beyond `bytes` per file while it lives (EFBIG instead of SIGXFSZ).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    previous_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit limit{bytes, saved_.rlim_max};
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    signal(SIGXFSZ, previous_handler_);
  }

 private:
  rlimit saved_{};
  sighandler_t previous_handler_;
};

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Reliability, AFailedWriteNamesTheFileAndCauseAndLeavesNothing) {
  auto dir = temp_dir("failed_write");
  std::string path = (dir / "big.bin").string();
  grm::write_file_atomic(path, "old");
  std::string message;
  {
    FileSizeLimit limit(4096);
    message = error_of([&] { grm::write_file_atomic(path, std::string(100000, 'x')); });
  }
  EXPECT_NE(message.find(path + ".tmp."), std::string::npos) << message;
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  EXPECT_EQ(grm::read_file(path), "old");                         // the target is unchanged
  EXPECT_EQ(names_in(dir), std::vector<std::string>{"big.bin"});  // and no temporary is left
  fs::remove_all(dir);
}

TEST(Reliability, ADirectoryIsCompleteOrAbsent) {
  auto dir = temp_dir("atomic_dir");
  std::string target = (dir / "model").string();
  EXPECT_EQ(error_of([&] {
              grm::write_directory_atomic(target, [](const std::string& partial) {
                grm::write_file_atomic(partial + "/config.json", "{}");
                grm::fail("tokenizer copy failed");
              });
            }),
            "tokenizer copy failed");
  EXPECT_TRUE(names_in(dir).empty());  // neither model/ nor model.partial/
  grm::write_directory_atomic(target, [](const std::string& p) { grm::write_file_atomic(p + "/a", "1"); });
  grm::write_directory_atomic(target, [](const std::string& p) { grm::write_file_atomic(p + "/b", "2"); });
  EXPECT_EQ(names_in(target), std::vector<std::string>{"b"});  // replaced whole, not merged
  EXPECT_EQ(names_in(dir), std::vector<std::string>{"model"});
  fs::remove_all(dir);
}

// train-rm whose first checkpoint does not fit: the weights (2.8 MB) are written, the optimizer state
// (5.5 MB) is not. The run must fail with a message, not abort, and leave no checkpoint or model behind.
TEST(Reliability, TrainRmOnAFullDiskFailsWithAMessageAndLeavesNoTornCheckpoint) {
  auto dir = temp_dir("full_disk");
  fs::path disk = dir / "disk";
  fs::create_directories(disk);
  bool tmpfs = ::mount("tmpfs", disk.c_str(), "tmpfs", 0, "size=6m") == 0;
  grm::TrainRmConfig c = tiny_training(dir, 32, 24);
  c.checkpoint_every = 1;
  c.optim.max_steps = 2;
  grm::write_file_atomic((dir / "c.yaml").string(), grm::dump_config(c));
  std::string out = (disk / "out").string();
  std::string command = std::string(GRM_BINARY) + " train-rm --config " + (dir / "c.yaml").string() +
                        " --out " + out + " > " + (dir / "log.txt").string() + " 2>&1";
  // Without tmpfs: files beyond 4 MB fail (bash's ulimit -f counts 1024-byte blocks).
  if (!tmpfs) command = "bash -c \"trap '' XFSZ; ulimit -f 4096; exec " + command + "\"";
  int status = std::system(command.c_str());
  std::string log = grm::read_file((dir / "log.txt").string());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << "status " << status << "\n" << log;
  EXPECT_NE(log.find("optimizer.pt"), std::string::npos) << log;
  EXPECT_NE(log.find(tmpfs ? "No space left on device" : "File too large"), std::string::npos) << log;
  EXPECT_EQ(log.find("terminate called"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out + "/model"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint/main/latest"));
  if (fs::exists(out + "/checkpoint/main")) {
    for (const auto& name : names_in(out + "/checkpoint/main")) ADD_FAILURE() << "left behind: " << name;
  }
  if (tmpfs) ::umount(disk.c_str());
  fs::remove_all(dir);
}

}  // namespace
