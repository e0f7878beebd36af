// The story-quality oracle of the default experiment: a documented, deterministic programmatic judge of
// a TinyStories continuation, standing in for human preference (the "gold" labeller of the synthetic
// setup). Components, summed:
//   ending     +1 if the last sentence has a happy word (happy, smiled, laughed, fun, love, ...),
//              -1 if it has a sad one (sad, cried, angry, scared, hurt, ...)
//   warmth     +0.1 per happy word anywhere, at most +0.5
//   character  +0.5 if the response mentions a named character of the prompt
//   repetition -2 * (1 - distinct word trigrams / trigrams)
//   length     -|ln(words / 60)|: stories of about 60 words are preferred
#pragma once

#include <string>

namespace grm {

struct StoryOracleParts {
  double ending = 0, warmth = 0, character = 0, repetition = 0, length = 0;
  double total() const { return ending + warmth + character + repetition + length; }
};

StoryOracleParts story_oracle_parts(const std::string& prompt, const std::string& response);
double story_oracle_score(const std::string& prompt, const std::string& response);

}  // namespace grm
