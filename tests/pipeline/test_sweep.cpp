#include "pipeline/sweep.hpp"
#include "tests/test_util.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace {

struct RmSection {
  std::string method = "bt";
  double alpha = 0.01;
  template <class V>
  void visit(V& v) {
    v("method", method, {"bt", "margin", "grm"});
    v("alpha", alpha);
  }
};

struct Experiment {
  int seed = 0;
  RmSection rm;
  grm::SweepConfig sweep;
  template <class V>
  void visit(V& v) {
    v("seed", seed);
    v("rm", rm);
    v("sweep", sweep);
  }
};

std::vector<grm::SweepPoint> expand(const std::string& text) {
  return grm::expand_sweep(grm::load_yaml_text(text, "exp.yaml"), "exp.yaml",
                           grm::config_key_check<Experiment>());
}

Experiment read(const grm::SweepPoint& point) {
  return grm::read_config<Experiment>(point.config, "exp.yaml");
}

TEST(Sweep, NoSweepIsOnePoint) {
  auto points = expand("seed: 3\n");
  ASSERT_EQ(points.size(), 1u);
  EXPECT_EQ(read(points[0]).seed, 3);
}

TEST(Sweep, ProductVariesTheFirstKeySlowest) {
  auto points = expand(
      "rm: {alpha: 0.5}\n"
      "sweep:\n"
      "  keys:\n"
      "    rm.method: [bt, grm]\n"
      "    seed: [0, 1, 2]\n");
  ASSERT_EQ(points.size(), 6u);
  std::vector<std::string> order;
  for (const auto& point : points) {
    Experiment experiment = read(point);
    EXPECT_DOUBLE_EQ(experiment.rm.alpha, 0.5);  // unswept values stay
    EXPECT_FALSE(point.config["sweep"].IsDefined());
    order.push_back(experiment.rm.method + std::to_string(experiment.seed));
  }
  EXPECT_EQ(order, (std::vector<std::string>{"bt0", "bt1", "bt2", "grm0", "grm1", "grm2"}));
  EXPECT_EQ(read(points[4]).seed, 1);
}

TEST(Sweep, ZipPairsValuesByPosition) {
  auto points = expand("sweep:\n  mode: zip\n  keys:\n    rm.method: [bt, grm]\n    rm.alpha: [0, 0.05]\n");
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(read(points[1]).rm.method, "grm");
  EXPECT_DOUBLE_EQ(read(points[1]).rm.alpha, 0.05);
  EXPECT_DOUBLE_EQ(read(points[0]).rm.alpha, 0);
}

TEST(Sweep, PointsAreIndependentCopies) {
  auto points = expand("rm: {alpha: 0.5}\nsweep: {keys: {seed: [0, 1]}}\n");
  points[0].config["rm"]["alpha"] = "0.9";
  EXPECT_DOUBLE_EQ(read(points[1]).rm.alpha, 0.5);
}

TEST(Sweep, ErrorsNameFileAndLine) {
  EXPECT_EQ(error_of([] { expand("seed: 1\nsweep:\n  keys:\n    rm.alpah: [0, 1]\n"); }),
            "exp.yaml:4: unknown key 'rm.alpah' (known: method, alpha)");
  EXPECT_EQ(error_of([] { expand("sweep:\n  keys:\n    rm.alpha: [0, x]\n"); }),
            "exp.yaml:3: 'rm.alpha' must be a number, got 'x'");
  EXPECT_EQ(error_of([] { expand("sweep:\n  keys:\n    rm.method: [bt, dpo]\n"); }),
            "exp.yaml:3: 'rm.method' must be one of bt, margin, grm; got 'dpo'");
  EXPECT_EQ(error_of([] { expand("sweep:\n  keys:\n    seed: 3\n"); }),
            "exp.yaml:3: sweep key 'seed' needs a non-empty list of values, e.g. [0, 0.01]");
  EXPECT_EQ(error_of([] { expand("sweep:\n  mode: zip\n  keys:\n    seed: [0, 1]\n    rm.alpha: [0]\n"); }),
            "exp.yaml:5: sweep mode zip needs lists of equal length: 'seed' has 2 values, 'rm.alpha' has 1");
  EXPECT_EQ(error_of([] { expand("sweep:\n  mode: grid\n"); }),
            "exp.yaml:2: 'sweep.mode' must be one of product, zip; got 'grid'");
  EXPECT_EQ(error_of([] { expand("sweep:\n  key: {seed: [1]}\n"); }),
            "exp.yaml:2: unknown key 'sweep.key' (known: mode, keys, groups)");
}

TEST(Sweep, WithoutCheckUnknownKeysAreCaughtWhenReadingThePoint) {
  auto points =
      grm::expand_sweep(grm::load_yaml_text("sweep: {keys: {rm.beta: [1]}}\n", "exp.yaml"), "exp.yaml");
  ASSERT_EQ(points.size(), 1u);
  EXPECT_NE(error_of([&] { read(points[0]); }).find("unknown key 'rm.beta'"), std::string::npos);
}

TEST(Sweep, GroupsAreAUnionOfProductsCrossedWithKeys) {
  auto points = expand(
      "sweep:\n"
      "  keys: {seed: [0, 1]}\n"
      "  groups:\n"
      "    - {rm.method: [bt, margin]}\n"
      "    - {rm.method: [grm], rm.alpha: [0.1, 0.2]}\n");
  std::vector<std::string> order;
  for (const auto& point : points) {
    Experiment e = read(point);
    order.push_back(fmt::format("{}{}/{}", e.rm.method,
                                e.rm.method == "grm" ? std::to_string(e.rm.alpha).substr(0, 3) : "", e.seed));
  }
  EXPECT_EQ(order, (std::vector<std::string>{"bt/0", "margin/0", "grm0.1/0", "grm0.2/0", "bt/1", "margin/1",
                                             "grm0.1/1", "grm0.2/1"}));
  // Without keys, the groups alone.
  EXPECT_EQ(expand("sweep: {groups: [{seed: [4]}, {rm.method: [grm]}]}\n").size(), 2u);
}

TEST(Sweep, GroupErrorsNameTheGroupAndLine) {
  EXPECT_EQ(error_of([] { expand("sweep:\n  groups:\n    - {rm.alpah: [0]}\n"); }),
            "exp.yaml:3: unknown key 'rm.alpah' (known: method, alpha)");
  EXPECT_EQ(error_of([] { expand("sweep:\n  groups:\n    - {seed: [0]}\n    - [seed]\n"); }),
            "exp.yaml:4: 'sweep.groups[1]' must be a non-empty map from dotted key to a list of values");
  EXPECT_EQ(error_of([] { expand("sweep:\n  keys: {seed: [0]}\n  groups:\n    - {seed: [1]}\n"); }),
            "exp.yaml:4: sweep key 'seed' is in both sweep.keys and sweep.groups[0]; give it in one place");
  EXPECT_EQ(error_of([] {
              expand("sweep: {groups: {seed: [1]}}\n");
            }).find("'sweep.groups' must be a non-empty list"),
            std::string("exp.yaml:1: ").size());
}

}  // namespace
