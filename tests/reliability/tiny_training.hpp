// What the reliability tests train in order to stop, resume, fill a disk or silence a rank: train-rm on
// TinyStories-656K with `n_pairs` short pairs written into `dir` (the happy ending preferred), one
// LibTorch thread, no held-out pairs. Each test then sets the steps, logging and checkpoints it needs.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "rm/train_rm.hpp"
#include "tests/test_util.hpp"

inline grm::TrainRmConfig tiny_training(const std::filesystem::path& dir, int n_pairs, int64_t max_length) {
  grm::TrainRmConfig c;
  c.model = shared_path("models/tinystories-656k");
  c.data.path = (dir / "pairs.jsonl").string();
  std::string lines;
  for (int i = 0; i < n_pairs; ++i)
    lines += nlohmann::json({{"prompt", "Once upon a time, Tom had a ball " + std::to_string(i) + "."},
                             {"chosen", " He played and was happy."},
                             {"rejected", " He cried and was sad."}})
                 .dump() +
             "\n";
  grm::write_file_atomic(c.data.path, lines);
  c.max_length = max_length;
  c.threads = 1;
  c.eval_fraction = 0;
  return c;
}
