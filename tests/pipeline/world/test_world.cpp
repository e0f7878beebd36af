// The default story world's prompt sets: distinct, disjoint, reproducible on every platform, and refused
// before any work when a family has too few distinct openings.
#include <gtest/gtest.h>

#include <set>

#include "core/error.hpp"
#include "pipeline/world/world.hpp"

using namespace grm;

namespace {

TEST(World, PromptSetsAreDistinctAndPairwiseDisjoint) {
  WorldConfig w;
  w.n_train_prompts = 300;
  w.n_test_prompts = 40;
  w.n_ood_prompts = 30;
  w.n_gold_ood_prompts = 100;
  auto sets = world_prompt_sets(w);
  std::map<std::string, size_t> expected = {{"train", 300},    {"test", 40},         {"ood_day", 30},
                                            {"gold_day", 100}, {"ood_dialogue", 30}, {"gold_dialogue", 100}};
  ASSERT_EQ(sets.size(), expected.size());
  std::map<std::string, std::string> owner;  // prompt -> the set holding it
  for (const auto& [name, prompts] : sets) {
    EXPECT_EQ(prompts.size(), expected.at(name)) << name;
    for (const auto& prompt : prompts) {
      auto [it, fresh] = owner.emplace(prompt, name);
      EXPECT_TRUE(fresh) << "'" << prompt << "' is in " << it->second << " and in " << name;
    }
  }
  // The ID test prompts (ID evaluation pairs, BoN, PPO evaluation) are never training prompts.
  std::set<std::string> train(sets["train"].begin(), sets["train"].end());
  for (const auto& prompt : sets["test"]) EXPECT_FALSE(train.count(prompt)) << prompt;
  EXPECT_EQ(world_prompt_sets(w), sets);  // seeded
  w.seed = 1;
  EXPECT_NE(world_prompt_sets(w)["test"], sets["test"]);
}

TEST(World, PromptsDoNotDependOnTheStandardLibrarysHash) {
  // Pinned: the family name is mixed into the seed by FNV-1a, not std::hash, whose values differ between
  // standard libraries (and so would every downstream stage).
  EXPECT_EQ(story_prompts("day", 2, 0),
            (std::vector<std::string>{"One day, Tim went to the zoo with a frog. They saw",
                                      "One day, Ella went to the zoo with a bird. They saw"}));
  EXPECT_EQ(story_prompts("dialogue", 1, 3),
            (std::vector<std::string>{"\"Look at that box?\" said Lily. Lily's mom said"}));
}

TEST(World, TooManyPromptsForAFamilyIsAnErrorNamingTheKeys) {
  WorldConfig w;
  w.ood_families = {"dialogue"};  // 6 quotes x 8 things x 16 names = 768 openings
  w.n_ood_prompts = 700;
  w.n_gold_ood_prompts = 100;
  try {
    world_prompt_sets(w);
    ADD_FAILURE() << "800 distinct dialogue openings were accepted";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("'dialogue' family has only 768 distinct openings"), std::string::npos) << message;
    EXPECT_NE(message.find("world.n_ood_prompts + world.n_gold_ood_prompts"), std::string::npos) << message;
  }
  EXPECT_THROW(story_prompts("nosuch", 1, 0), Error);
}

}  // namespace
