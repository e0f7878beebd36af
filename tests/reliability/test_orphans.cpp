// A stage never outlives the `grm run` that started it: its children get SIGTERM when it dies, even by
// kill -9 (which gives it no chance to clean up).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/launcher.hpp"

namespace {

TEST(Reliability, ChildrenDieWithTheProcessThatSpawnedThem) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  pid_t runner = ::fork();
  ASSERT_GE(runner, 0);
  if (runner == 0) {  // stands in for `grm run`: starts a long stage, then waits to be killed
    ::close(pipe_fds[0]);
    pid_t stage = grm::spawn_process({"sleep", "3600"}, {});
    ssize_t written = ::write(pipe_fds[1], &stage, sizeof stage);
    ::_exit(written == sizeof stage ? (::pause(), 0) : 1);
  }
  ::close(pipe_fds[1]);
  pid_t stage = 0;
  ASSERT_EQ(::read(pipe_fds[0], &stage, sizeof stage), ssize_t(sizeof stage));
  ::close(pipe_fds[0]);
  ASSERT_TRUE(grm::process_running(stage, "sleep"));
  ::kill(runner, SIGKILL);
  ::waitpid(runner, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = !grm::process_running(stage, "sleep");
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(gone) << "the stage (pid " << stage << ") outlived its killed parent";
  if (!gone) ::kill(stage, SIGKILL);
}

}  // namespace
