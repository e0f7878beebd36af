// The unit of reward serving: a (prompt, response) text to score, and the batch-scoring function the
// server calls. Shared by the server, the client, the batcher, the wire format and rm/'s Scorer, so none
// of them includes another's header for it.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace grm {

// One text to score: a prompt and a response in the interchange form of policy/chat_format.hpp, which
// each reward model renders with its own chat template. OpenRLHF's "query" texts (prompt and response
// already joined by the policy's chat template) arrive as prompt = "", response = text, formatted = true:
// scored as they are.
struct ScoreItem {
  std::string prompt;
  std::string response;
  bool finished = true;    // false: the response was cut at max_new_tokens, so no end of turn follows it
  bool formatted = false;  // the text is already what the model reads: no chat template is applied
};

// Scores a batch, one reward per item in order. Called from one thread at a time (the server's batching
// thread), so it may keep per-model state without locks. May throw: the requests in that batch get a 500
// with the exception's message, and the server carries on.
using BatchScorer = std::function<std::vector<double>(const std::vector<ScoreItem>&)>;

}  // namespace grm
