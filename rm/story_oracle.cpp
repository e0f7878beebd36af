#include "rm/story_oracle.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>
#include <vector>

namespace grm {
namespace {

const std::set<std::string> kHappy = {"happy",   "smiled", "smile",    "smiles", "laughed", "laugh",
                                      "fun",     "love",   "loved",    "hug",    "hugged",  "glad",
                                      "friends", "friend", "kind",     "nice",   "proud",   "best",
                                      "joy",     "played", "together", "thank",  "thanked"};
const std::set<std::string> kSad = {"sad",   "cried",  "cry", "crying", "angry", "scared", "hurt",   "lost",
                                    "broke", "broken", "bad", "mad",    "upset", "alone",  "afraid", "died"};
const std::set<std::string> kNotNames = {"Once", "One",  "The", "A",     "An",    "Then", "He",
                                         "She",  "They", "It",  "There", "Every", "In",   "On",
                                         "At",   "But",  "And", "So",    "When",  "I"};

std::vector<std::string> words_of(const std::string& text, bool lower) {
  std::vector<std::string> words;
  std::string current;
  for (char ch : text) {
    if (std::isalpha(static_cast<unsigned char>(ch)) || ch == '\'') {
      current.push_back(lower ? char(std::tolower(static_cast<unsigned char>(ch))) : ch);
    } else if (!current.empty()) {
      words.push_back(current);
      current.clear();
    }
  }
  if (!current.empty()) words.push_back(current);
  return words;
}

std::string last_sentence(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && std::string(".!? \n\t\"").find(trimmed.back()) != std::string::npos)
    trimmed.pop_back();
  size_t end = trimmed.find_last_of(".!?");
  return end == std::string::npos ? trimmed : trimmed.substr(end + 1);
}

}  // namespace

StoryOracleParts story_oracle_parts(const std::string& prompt, const std::string& response) {
  StoryOracleParts parts;
  auto words = words_of(response, true);
  for (const auto& w : words_of(last_sentence(response), true)) {
    if (kHappy.count(w)) parts.ending = 1.0;
    if (kSad.count(w)) {
      parts.ending = -1.0;
      break;
    }
  }
  int happy = 0;
  for (const auto& w : words) happy += kHappy.count(w) ? 1 : 0;
  parts.warmth = std::min(0.5, 0.1 * happy);
  auto response_words = words_of(response, false);
  std::set<std::string> mentioned(response_words.begin(), response_words.end());
  for (const auto& w : words_of(prompt, false))
    if (std::isupper(static_cast<unsigned char>(w[0])) && !kNotNames.count(w) && mentioned.count(w)) {
      parts.character = 0.5;
      break;
    }
  if (words.size() >= 3) {
    std::set<std::string> trigrams;
    for (size_t i = 0; i + 2 < words.size(); ++i)
      trigrams.insert(words[i] + " " + words[i + 1] + " " + words[i + 2]);
    parts.repetition = -2.0 * (1.0 - double(trigrams.size()) / double(words.size() - 2));
  }
  parts.length = -std::abs(std::log(double(std::max<size_t>(words.size(), 1)) / 60.0));
  return parts;
}

double story_oracle_score(const std::string& prompt, const std::string& response) {
  return story_oracle_parts(prompt, response).total();
}

}  // namespace grm
