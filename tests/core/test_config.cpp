#include "core/config.hpp"
#include "tests/test_util.hpp"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <unistd.h>

namespace {

struct AdamConfig {
  double lr = 1e-4;
  int warmup_steps = 10;
  std::vector<int> sizes = {1, 2};
  template <class V>
  void visit(V& v) {
    v("lr", lr);
    v("warmup_steps", warmup_steps);
    v("sizes", sizes);
  }
};

struct TrainConfig {
  std::string model = "tinystories-656k";
  std::string method = "bt";
  bool verbose = false;
  std::int64_t n_tokens = 1;
  std::optional<double> alpha;
  AdamConfig adam;
  std::map<std::string, std::string> field_map;
  std::vector<AdamConfig> stages;
  template <class V>
  void visit(V& v) {
    v("model", model);
    v("method", method, {"bt", "margin", "grm"});
    v("verbose", verbose);
    v("n_tokens", n_tokens);
    v("alpha", alpha);
    v("adam", adam);
    v("field_map", field_map);
    v("stages", stages);
  }
};

// Rules beside the fields, as real configs state them.
struct Ranged {
  double lr = 1e-3;
  double warmup_ratio = 0.1;
  double dropout = 0.0;
  std::int64_t batch_size = 8;
  std::vector<double> weights = {1.0};
  double free = 0.0;
  template <class V>
  void visit(V& v) {
    v("lr", lr, grm::Range::positive());
    v("warmup_ratio", warmup_ratio, grm::Range::closed(0, 1));
    v("dropout", dropout, grm::Range::half_open(0, 1));
    v("batch_size", batch_size, grm::Range::at_least(1));
    v("weights", weights, grm::Range::at_least(0));
    v("free", free);
  }
};

struct Validated {
  int n = 1;
  template <class V>
  void visit(V& v) {
    v("n", n);
  }
  void validate() const {
    if (n <= 0) grm::fail("n must be positive, got {}", n);
  }
};

struct Outer {
  Validated inner;
  template <class V>
  void visit(V& v) {
    v("inner", inner);
  }
};

// Old spellings: a key that moved into `adam`, and a choice that is spelled as another key now. The calls
// come after the fields on purpose: the old spellings must be found whatever the order.
struct Renamed {
  std::string finetune = "full";
  AdamConfig adam;
  template <class V>
  void visit(V& v) {
    v("finetune", finetune, {"full", "lora"});
    v("adam", adam);
    v.renamed("learning_rate", "adam.lr");
    v.renamed("finetune: frozen", "method: frozen");
  }
};

struct HoldsRenamed {
  Renamed rm;
  template <class V>
  void visit(V& v) {
    v("rm", rm);
  }
};

TrainConfig parse(const std::string& text) {
  return grm::read_config<TrainConfig>(grm::load_yaml_text(text, "cfg.yaml"), "cfg.yaml");
}

TEST(Config, MissingFieldsKeepDefaults) {
  TrainConfig config = parse("adam:\n  lr: 0.5\n");
  EXPECT_EQ(config.model, "tinystories-656k");
  EXPECT_DOUBLE_EQ(config.adam.lr, 0.5);
  EXPECT_EQ(config.adam.warmup_steps, 10);
  EXPECT_EQ(config.adam.sizes, (std::vector<int>{1, 2}));
  EXPECT_FALSE(config.alpha.has_value());
  EXPECT_EQ(parse("").model, "tinystories-656k");
}

TEST(Config, ReadsEveryFieldType) {
  TrainConfig config = parse(
      "model: m\nmethod: grm\nverbose: yes\nn_tokens: 5000000000\nalpha: 0.01\n"
      "adam: {lr: 1e-3, warmup_steps: 3, sizes: [4, 5, 6]}\n"
      "field_map: {chosen: good, rejected: bad}\n"
      "stages: [{lr: 2}, {warmup_steps: 7}]\n");
  EXPECT_EQ(config.model, "m");
  EXPECT_EQ(config.method, "grm");
  EXPECT_TRUE(config.verbose);
  EXPECT_EQ(config.n_tokens, 5000000000LL);
  ASSERT_TRUE(config.alpha.has_value());
  EXPECT_DOUBLE_EQ(*config.alpha, 0.01);
  EXPECT_DOUBLE_EQ(config.adam.lr, 1e-3);
  EXPECT_EQ(config.adam.sizes, (std::vector<int>{4, 5, 6}));
  EXPECT_EQ(config.field_map.at("rejected"), "bad");
  ASSERT_EQ(config.stages.size(), 2u);
  EXPECT_DOUBLE_EQ(config.stages[0].lr, 2);
  EXPECT_EQ(config.stages[0].warmup_steps, 10);
  EXPECT_EQ(config.stages[1].warmup_steps, 7);
}

TEST(Config, UnknownKeyNamesFileLineAndKnownKeys) {
  std::string message = error_of([] { parse("model: m\nadam:\n  lrr: 0.1\n"); });
  EXPECT_EQ(message, "cfg.yaml:3: unknown key 'adam.lrr' (known: lr, warmup_steps, sizes)");
}

TEST(Config, WrongTypeNamesFileLineKeyAndValue) {
  EXPECT_EQ(error_of([] { parse("adam:\n  lr: abc\n"); }),
            "cfg.yaml:2: 'adam.lr' must be a number, got 'abc'");
  EXPECT_EQ(error_of([] { parse("adam:\n  warmup_steps: 1.5\n"); }),
            "cfg.yaml:2: 'adam.warmup_steps' must be an integer, got '1.5'");
  EXPECT_EQ(
      error_of([] { parse("adam:\n  warmup_steps: 3000000000\n"); }),
      "cfg.yaml:2: 'adam.warmup_steps' must be an integer in [-2147483648, 2147483647], got '3000000000'");
  EXPECT_EQ(error_of([] { parse("verbose: maybe\n"); }),
            "cfg.yaml:1: 'verbose' must be true or false, got 'maybe'");
  EXPECT_EQ(error_of([] { parse("\nadam: {sizes: 3}\n"); }),
            "cfg.yaml:2: 'adam.sizes' must be a list, got '3'");
  EXPECT_EQ(error_of([] { parse("adam: {sizes: [1, x]}\n"); }),
            "cfg.yaml:1: 'adam.sizes[1]' must be an integer, got 'x'");
  EXPECT_EQ(error_of([] { parse("model: [a]\n"); }), "cfg.yaml:1: 'model' must be a string, got a list");
  EXPECT_EQ(error_of([] { parse("- 1\n"); }), "cfg.yaml:1: the top level must be a map, got a list");
}

TEST(Config, RangesAreCheckedWithFileLineKeyValueAndRule) {
  auto read = [](const std::string& text) {
    return grm::read_config<Ranged>(grm::load_yaml_text(text, "cfg.yaml"), "cfg.yaml");
  };
  EXPECT_EQ(error_of([&] { read("lr: -1\n"); }), "cfg.yaml:1: 'lr' must be > 0, got '-1'");
  EXPECT_EQ(error_of([&] { read("lr: 0\n"); }), "cfg.yaml:1: 'lr' must be > 0, got '0'");
  EXPECT_EQ(error_of([&] { read("\nwarmup_ratio: 5\n"); }),
            "cfg.yaml:2: 'warmup_ratio' must be in [0, 1], got '5'");
  EXPECT_EQ(error_of([&] { read("dropout: 1\n"); }), "cfg.yaml:1: 'dropout' must be in [0, 1), got '1'");
  EXPECT_EQ(error_of([&] { read("batch_size: 0\n"); }), "cfg.yaml:1: 'batch_size' must be >= 1, got '0'");
  EXPECT_EQ(error_of([&] { read("weights: [1, -0.5]\n"); }),
            "cfg.yaml:1: 'weights[1]' must be >= 0, got '-0.5'");
  // Ends of the intervals are in or out as stated.
  Ranged edges = read("lr: 1e-9\nwarmup_ratio: 1\ndropout: 0\nbatch_size: 1\n");
  EXPECT_DOUBLE_EQ(edges.warmup_ratio, 1);
  EXPECT_EQ(edges.batch_size, 1);
  // Overrides and sweep values meet the same rules.
  EXPECT_EQ(error_of([] {
              YAML::Node root(YAML::NodeType::Map);
              grm::apply_checked_override<Ranged>(root, "lr=-1");
            }),
            "--set lr=-1: 'lr' must be > 0, got '-1'");
  Ranged set;
  EXPECT_NE(error_of([&] {
              grm::set_config_key(set, "dropout", YAML::Load("2"), "--set dropout=2");
            }).find("must be in [0, 1)"),
            std::string::npos);
}

TEST(Config, EveryNumberMustBeFinite) {
  for (const char* bad : {".nan", ".NaN", ".inf", "-.inf", "+.Inf", "nan", "inf", "infinity"}) {
    std::string text = std::string("free: ") + bad + "\n";
    EXPECT_EQ(error_of([&] { grm::read_config<Ranged>(grm::load_yaml_text(text, "cfg.yaml"), "cfg.yaml"); }),
              std::string("cfg.yaml:1: 'free' must be a finite number, got '") + bad + "'")
        << bad;
  }
  EXPECT_EQ(grm::Range::positive().describe(), "> 0");
  EXPECT_EQ(grm::Range::open_closed(0, 1).describe(), "in (0, 1]");
  EXPECT_EQ(grm::Range().describe(), "any finite number");
}

TEST(Config, BadChoiceListsAllowedValues) {
  EXPECT_EQ(error_of([] { parse("method: dpo\n"); }),
            "cfg.yaml:1: 'method' must be one of bt, margin, grm; got 'dpo'");
}

TEST(Config, RenamedKeysAndValuesNameTheNewSpellingWithFileAndLine) {
  auto read = [](const std::string& text) {
    return grm::read_config<HoldsRenamed>(grm::load_yaml_text(text, "old.yaml"), "old.yaml");
  };
  EXPECT_EQ(error_of([&] { read("rm:\n  finetune: lora\n  learning_rate: 0.1\n"); }),
            "old.yaml:3: 'rm.learning_rate' was renamed to 'rm.adam.lr'");
  EXPECT_EQ(error_of([&] { read("\nrm: {finetune: frozen}\n"); }),
            "old.yaml:2: 'rm.finetune: frozen' was renamed to 'rm.method: frozen'");
  // Other values of a field with a renamed value read as usual, or fail as bad choices.
  EXPECT_EQ(read("rm: {finetune: lora, adam: {lr: 0.5}}\n").rm.finetune, "lora");
  EXPECT_EQ(error_of([&] { read("rm: {finetune: head}\n"); }),
            "old.yaml:1: 'rm.finetune' must be one of full, lora; got 'head'");
  // Nothing of the old spellings is written back.
  EXPECT_EQ(grm::dump_config(HoldsRenamed{}),
            "rm:\n  finetune: full\n  adam:\n    lr: 1e-04\n    "
            "warmup_steps: 10\n    sizes: [1, 2]\n");
}

TEST(Config, RenamedKeysFailInOverridesAndSweepKeys) {
  YAML::Node root = grm::load_yaml_text("rm: {}\n", "cfg.yaml");
  EXPECT_EQ(error_of([&] { grm::apply_checked_override<HoldsRenamed>(root, "rm.learning_rate=1"); }),
            "--set rm.learning_rate=1: 'rm.learning_rate' was renamed to 'rm.adam.lr'");
  EXPECT_EQ(error_of([&] { grm::apply_checked_override<HoldsRenamed>(root, "rm.finetune=frozen"); }),
            "--set rm.finetune=frozen: 'rm.finetune: frozen' was renamed to 'rm.method: frozen'");
  grm::apply_checked_override<HoldsRenamed>(root, "rm.finetune=lora");
  EXPECT_EQ(grm::read_config<HoldsRenamed>(root, "cfg.yaml").rm.finetune, "lora");
  // A sweep checks each value where it stands in the file.
  YAML::Node values = grm::load_yaml_text("keys:\n  rm.finetune: [lora,\n    frozen]\n", "sweep.yaml");
  EXPECT_EQ(error_of([&] {
              for (const auto& value : values["keys"]["rm.finetune"])
                grm::check_config_key<HoldsRenamed>("rm.finetune", value, "sweep.yaml");
            }),
            "sweep.yaml:3: 'rm.finetune: frozen' was renamed to 'rm.method: frozen'");
}

TEST(Config, DuplicateKeyIsAnError) {
  EXPECT_EQ(error_of([] { parse("model: a\nmodel: b\n"); }), "cfg.yaml:2: duplicate key 'model'");
}

TEST(Config, ValidateRunsAfterReadingWithLocation) {
  auto read = [](const std::string& text) {
    return grm::read_config<Outer>(grm::load_yaml_text(text, "v.yaml"), "v.yaml");
  };
  EXPECT_EQ(read("inner:\n  n: 3\n").inner.n, 3);
  EXPECT_EQ(error_of([&] { read("\ninner:\n  n: 0\n"); }), "v.yaml:3: in 'inner': n must be positive, got 0");
}

TEST(Config, MissingFileAndSyntaxErrorNameTheFile) {
  EXPECT_NE(
      error_of([] { grm::read_config_file<TrainConfig>("/nonexistent/x.yaml"); }).find("/nonexistent/x.yaml"),
      std::string::npos);
  std::string message = error_of([] { parse("model: m\nadam: {lr: 1\n"); });
  EXPECT_EQ(message.rfind("cfg.yaml:", 0), 0u) << message;
  EXPECT_NE(message.find("YAML syntax error"), std::string::npos) << message;
  std::string tab = error_of([] { parse("model: m\nadam:\n\tlr: 1\n"); });
  EXPECT_EQ(tab.rfind("cfg.yaml:3:", 0), 0u) << tab;
}

TEST(Config, ReadsFromFile) {
  auto path = temp_dir("config") / "cfg.yaml";
  std::ofstream(path) << "adam:\n  lr: 0.25\n  bogus: 1\n";
  std::string message = error_of([&] { grm::read_config_file<TrainConfig>(path.string()); });
  EXPECT_EQ(message, path.string() + ":3: unknown key 'adam.bogus' (known: lr, warmup_steps, sizes)");
  std::filesystem::remove(path);
}

TEST(Config, DumpThenReadRoundTrips) {
  TrainConfig config;
  config.model = "a: tricky, string";
  config.method = "margin";
  config.verbose = true;
  config.alpha = 0.1;
  config.adam.lr = 3e-5;
  config.adam.sizes = {};
  config.field_map = {{"prompt", "question"}, {"chosen", "yes"}};
  config.stages = {AdamConfig{}, AdamConfig{}};
  config.stages[1].lr = 1.0 / 3.0;
  std::string text = grm::dump_config(config);
  TrainConfig back = grm::read_config<TrainConfig>(grm::load_yaml_text(text, "dump"), "dump");
  EXPECT_EQ(grm::dump_config(back), text);
  EXPECT_EQ(back.model, config.model);
  EXPECT_EQ(back.alpha, config.alpha);
  EXPECT_EQ(back.adam.lr, config.adam.lr);
  EXPECT_EQ(back.stages[1].lr, config.stages[1].lr);  // exact: shortest round-trip formatting
  EXPECT_TRUE(back.adam.sizes.empty());
  EXPECT_EQ(back.field_map, config.field_map);
  EXPECT_NE(text.find("lr: 3e-05"), std::string::npos) << text;
  EXPECT_NE(text.find("sizes: [1, 2]"), std::string::npos) << text;
  EXPECT_NE(text.find("alpha: 0.1\n"), std::string::npos) << text;
}

TEST(Config, HashIsStableAndSensitive) {
  EXPECT_EQ(grm::stable_hash(""), "cbf29ce484222325");  // FNV-1a-64 reference values
  EXPECT_EQ(grm::stable_hash("a"), "af63dc4c8601ec8c");
  TrainConfig config;
  std::string hash = grm::config_hash(config);
  EXPECT_EQ(hash.size(), 16u);
  EXPECT_EQ(grm::config_hash(TrainConfig{}), hash);
  config.adam.lr = 1.0001e-4;
  EXPECT_NE(grm::config_hash(config), hash);
  config.adam.lr = 1e-4;
  EXPECT_EQ(grm::config_hash(config), hash);
  config.field_map["x"] = "";
  EXPECT_NE(grm::config_hash(config), hash);
}

TEST(Config, OverrideSetsNestedValuesAndCreatesMaps) {
  YAML::Node root = grm::load_yaml_text("adam:\n  lr: 0.1\n", "cfg.yaml");
  grm::apply_override(root, "adam.lr=0.05");
  grm::apply_override(root, "adam.sizes=[8, 9]");
  grm::apply_override(root, "field_map.prompt=question");
  grm::apply_override(root, "alpha=");
  TrainConfig config = grm::read_config<TrainConfig>(root, "cfg.yaml");
  EXPECT_DOUBLE_EQ(config.adam.lr, 0.05);
  EXPECT_EQ(config.adam.sizes, (std::vector<int>{8, 9}));
  EXPECT_EQ(config.field_map.at("prompt"), "question");
  EXPECT_FALSE(config.alpha.has_value());
}

TEST(Config, BadOverridesNameTheAssignment) {
  YAML::Node root = grm::load_yaml_text("model: m\n", "cfg.yaml");
  EXPECT_EQ(error_of([&] { grm::apply_override(root, "adam.lr"); }),
            "--set 'adam.lr': expected KEY=VALUE, e.g. rm.alpha=0.05");
  EXPECT_NE(error_of([&] { grm::apply_override(root, "adam..lr=1"); }).find("bad key 'adam..lr'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { grm::apply_override(root, "adam.lr=[1"); }).find("not valid YAML"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { grm::apply_override(root, "model.x=1"); }),
            "--set model.x=1: 'model' is a single value, it has no key 'x'");
  EXPECT_EQ(error_of([&] { grm::apply_checked_override<TrainConfig>(root, "adam.lrr=1"); }),
            "--set adam.lrr=1: unknown key 'adam.lrr' (known: lr, warmup_steps, sizes)");
  EXPECT_EQ(error_of([&] { grm::apply_checked_override<TrainConfig>(root, "adam.lr=abc"); }),
            "--set adam.lr=abc: 'adam.lr' must be a number, got 'abc'");
  EXPECT_EQ(error_of([&] { grm::apply_checked_override<TrainConfig>(root, "method=dpo"); }),
            "--set method=dpo: 'method' must be one of bt, margin, grm; got 'dpo'");
  EXPECT_EQ(error_of([&] { grm::apply_checked_override<TrainConfig>(root, "model.x=1"); }),
            "--set model.x=1: 'model' is a single value, it has no key 'x'");
  // A checked override that fails leaves the node untouched; one that passes is applied.
  grm::apply_checked_override<TrainConfig>(root, "field_map.any_key=v");
  EXPECT_EQ(grm::read_config<TrainConfig>(root, "cfg.yaml").field_map.at("any_key"), "v");
  EXPECT_FALSE(root["adam"].IsDefined());
}

TEST(Config, UncheckedOverrideErrorsNameTheOverrideNotALine) {
  YAML::Node root = grm::load_yaml_text("model: m\n", "cfg.yaml");
  grm::apply_override(root, "adam.lr=abc");
  EXPECT_EQ(error_of([&] { grm::read_config<TrainConfig>(root, "cfg.yaml"); }),
            "cfg.yaml: 'adam.lr' must be a number, got 'abc'");
}

TEST(Config, SetConfigKeyWritesTypedField) {
  TrainConfig config;
  grm::set_config_key(config, "adam.warmup_steps", YAML::Node("42"), "sweep");
  grm::set_config_key(config, "alpha", YAML::Node("0.5"), "sweep");
  EXPECT_EQ(config.adam.warmup_steps, 42);
  EXPECT_EQ(config.alpha, 0.5);
}

}  // namespace
