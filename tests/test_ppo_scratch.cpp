// TEMPORARY scratch driver (to be deleted).
#include <gtest/gtest.h>
#include <cstdlib>
#include "ppo/ppo.hpp"
#include "cluster/config.hpp"
using namespace grm;
TEST(ScratchPpo, Run) {
  const char* path = std::getenv("PPO_SCRATCH");
  if (!path) GTEST_SKIP();
  auto config = read_config_file<PpoConfig>(path);
  const char* out = std::getenv("PPO_OUT");
  train_ppo(config, out, "");
}
