// Small promises of the command line, each once broken: generate's spacing at the prompt seam, tokenizing
// an empty text, and `grm run --out`.
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

#include "tests/test_util.hpp"

namespace {

// Output and errors together: the tests read messages as a user sees them.
std::pair<std::string, int> run(const std::string& command) {
  return run_command(command + " 2>&1");
}

const std::string kGrm = GRM_BINARY;

// "They saw" + "▁a" once printed "They sawa": the continuation keeps the tokenizer's own spacing.
TEST(CliCommands, GenerateKeepsTheSpaceAtThePromptSeam) {
  auto [out, status] = run(kGrm + " generate --model " + shared_path("models/tinystories-656k") +
                           " --prompt 'They saw' --temperature 0 --max-new-tokens 4");
  ASSERT_EQ(status, 0) << out;
  size_t at = out.find("[0] They saw");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_EQ(out[at + std::string("[0] They saw").size()], ' ') << out;
}

TEST(CliCommands, TokenizeAcceptsAnEmptyText) {
  auto [out, status] =
      run(kGrm + " tokenize --tokenizer " + shared_path("models/tinystories-656k") + " --text ''");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("ids ("), std::string::npos) << out;
  auto [refused, code] = run(kGrm + " tokenize --tokenizer " + shared_path("models/tinystories-656k"));
  EXPECT_NE(code, 0);
  EXPECT_NE(refused.find("pass --text TEXT or --decode"), std::string::npos) << refused;
}

TEST(CliCommands, RunOutChoosesTheRunDirectory) {
  auto dir = temp_dir("run_out");
  auto [out, status] = run(kGrm + " run " + std::string(GRM_SOURCE_DIR) +
                           "/experiments/quickstart.yaml --out " + (dir / "here").string() + " --dry-run");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("stages in " + (dir / "here").string()), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
