// The causal LM against Hugging Face transformers' own outputs (fixtures made by
// shared/fixtures/make_fixtures*.py): logits, final hidden states and token log-probs within 1e-4 (fp32 on
// CPU; the reference ran fp32 too, so only summation order differs) and greedy continuations identical.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "policy/generate.hpp"
#include "policy/logprobs.hpp"
#include "policy/model.hpp"
#include "policy/model_path.hpp"
#include "policy/safetensors.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using namespace grm;

namespace {

constexpr double kTolerance = 1e-4;

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// Differences on real (unpadded) positions only: (B, T, ...) with mask (B, T).
double masked_max_abs_diff(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& mask) {
  auto keep = mask.to(torch::kBool);
  return max_abs_diff(a.index({keep}), b.index({keep}));
}

std::vector<int64_t> row(const torch::Tensor& t, int64_t r) {
  auto c = t[r].contiguous().to(torch::kInt64);
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, MatchesTransformers) {
  torch::NoGradGuard no_grad;
  std::string dir = shared_path("fixtures/hf/" + GetParam());
  auto model = load_causal_lm(dir);
  auto ref = load_safetensors(dir + "/reference.safetensors");
  auto ids = ref.at("input_ids"), mask = ref.at("attention_mask");
  auto out = model->forward(ids, mask);
  EXPECT_LT(masked_max_abs_diff(out.logits, ref.at("logits"), mask), kTolerance);
  EXPECT_LT(masked_max_abs_diff(out.hidden, ref.at("last_hidden"), mask), kTolerance);
  // log p(ids[t+1] | ..t) where the next token is real
  auto next_mask = mask.narrow(1, 1, mask.size(1) - 1);
  EXPECT_LT(masked_max_abs_diff(token_logprobs(out.logits, ids), ref.at("token_logprobs"), next_mask),
            kTolerance);

  auto prompt = ref.at("prompt"), greedy = ref.at("greedy");
  GenerateOptions options;
  options.sampling.temperature = 0;
  options.max_new_tokens = greedy.size(1) - prompt.size(1);
  auto gen = generate(model, {row(prompt, 0)}, options);
  auto expected = row(greedy, 0);
  expected.erase(expected.begin(), expected.begin() + prompt.size(1));
  EXPECT_EQ(gen.tokens[0], expected);
}

INSTANTIATE_TEST_SUITE_P(Models, HfFixture, ::testing::Values("gpt2", "llama", "qwen2", "gemma", "mistral"));

TEST(TinyStories, ReproducesEveryReferencePrompt) {
  torch::NoGradGuard no_grad;
  auto model = load_causal_lm(shared_path("models/tinystories-656k"));
  auto ref = load_safetensors(shared_path("fixtures/real/tinystories_reference.safetensors"));
  int n_prompts = 0;
  for (int k = 0; ref.count("p" + std::to_string(k) + ".input_ids"); ++k, ++n_prompts) {
    std::string p = "p" + std::to_string(k) + ".";
    auto ids = ref.at(p + "input_ids");
    auto out = model->forward(ids, torch::ones_like(ids));
    EXPECT_LT(max_abs_diff(out.logits, ref.at(p + "logits")), kTolerance) << p;
    EXPECT_LT(max_abs_diff(out.hidden, ref.at(p + "last_hidden")), kTolerance) << p;
    auto greedy = row(ref.at(p + "greedy"), 0);
    GenerateOptions options;
    options.sampling.temperature = 0;
    options.max_new_tokens = int64_t(greedy.size()) - ids.size(1);
    auto gen = generate(model, {row(ids, 0)}, options);
    std::vector<int64_t> expected(greedy.begin() + ids.size(1), greedy.end());
    EXPECT_EQ(gen.tokens[0], expected) << p;
  }
  EXPECT_GT(n_prompts, 0) << "no pK.input_ids in the reference file";
}

// The second real model (stories3m: 6 layers, GQA with 6 query and 2 key/value heads, its own 4,096-token
// tokenizer) against its reference file, whatever entries it holds: tokenizer ids exactly (with and without
// BOS), the first logits of each prompt's last position within 1e-4, its argmax, and the greedy ids exactly.
TEST(Stories3m, ReproducesEveryReferenceEntry) {
  torch::NoGradGuard no_grad;
  nlohmann::json ref =
      nlohmann::json::parse(grm::read_file(shared_path("fixtures/real/stories3m_reference.json")));
  std::string dir = shared_path(ref.value("model_dir", "models/stories3m"));
  auto tokenizer = load_tokenizer(dir);
  ASSERT_FALSE(ref["tokenization"].empty());
  for (const auto& entry : ref["tokenization"]) {
    std::string text = entry["text"];
    EXPECT_EQ(tokenizer->encode(text, true), entry["ids_with_bos"].get<std::vector<int64_t>>()) << text;
    EXPECT_EQ(tokenizer->encode(text, false), entry["ids_no_bos"].get<std::vector<int64_t>>()) << text;
  }
  auto model = load_causal_lm(dir);
  ASSERT_FALSE(ref["generation"].empty());
  for (const auto& entry : ref["generation"]) {
    std::string prompt = entry["prompt"];
    auto input = entry["input_ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(tokenizer->encode(prompt, true), input) << prompt;
    auto ids = torch::tensor(input, torch::kInt64).unsqueeze(0);
    auto last = model->forward(ids, torch::ones_like(ids)).logits[0][ids.size(1) - 1].to(torch::kFloat64);
    auto first = entry["last_logits_first16"].get<std::vector<double>>();
    auto expected = torch::tensor(first, torch::kFloat64);
    EXPECT_LT((last.narrow(0, 0, int64_t(first.size())) - expected).abs().max().item<double>(), 1e-4)
        << prompt;
    EXPECT_EQ(last.argmax().item<int64_t>(), entry["last_logits_argmax"].get<int64_t>()) << prompt;
    EXPECT_NEAR(last.max().item<double>(), entry["last_logits_max"].get<double>(), 1e-4) << prompt;
    GenerateOptions options = generate_options_for(model->config(), *tokenizer);
    options.sampling.temperature = 0;
    auto greedy = entry["greedy_new_ids"].get<std::vector<int64_t>>();
    options.max_new_tokens = int64_t(greedy.size());
    auto out = generate(model, {input}, options);
    EXPECT_EQ(out.tokens[0], greedy) << prompt;
  }
}

TEST(CausalLM, LeftPaddingAndKvCacheMatchAFullForward) {
  torch::NoGradGuard no_grad;
  auto model = load_causal_lm(shared_path("fixtures/hf/llama"));
  auto ids = torch::tensor({{5, 9, 17, 33, 65, 129}}, torch::kInt64);
  auto full = model->forward(ids, torch::ones_like(ids)).logits;
  // The same sequence left-padded by three tokens in a batch of two.
  auto padded = torch::cat({torch::zeros({1, 3}, torch::kInt64), ids}, 1).repeat({2, 1});
  auto mask = torch::cat({torch::zeros({1, 3}, torch::kInt64), torch::ones_like(ids)}, 1).repeat({2, 1});
  auto left = model->forward(padded, mask).logits;
  EXPECT_LT(max_abs_diff(left[0].narrow(0, 3, 6), full[0]), 1e-5);
  // Prefill four tokens, then two single-token steps through the cache.
  auto cache = model->make_cache(1, 8);
  auto a = model->forward(ids.narrow(1, 0, 4), torch::ones({1, 4}, torch::kInt64), &cache).logits;
  auto b = model->forward(ids.narrow(1, 4, 1), torch::ones({1, 1}, torch::kInt64), &cache).logits;
  auto c = model->forward(ids.narrow(1, 5, 1), torch::ones({1, 1}, torch::kInt64), &cache).logits;
  EXPECT_LT(max_abs_diff(torch::cat({a, b, c}, 1), full), 1e-5);
  EXPECT_EQ(cache.length, 6);
}

TEST(CausalLM, ResponseLogprobsSumOnlyTheMaskedTokens) {
  torch::NoGradGuard no_grad;
  auto model = load_causal_lm(shared_path("fixtures/hf/llama"));
  auto ids = torch::tensor({{5, 9, 17, 33, 65}}, torch::kInt64);
  auto logits = model->forward(ids, torch::ones_like(ids)).logits;
  auto per_token = token_logprobs(logits, ids);  // (1, 4): tokens 1..4
  auto response = torch::tensor({{0, 0, 0, 1, 1}}, torch::kInt64);
  auto sum = response_logprobs(logits, ids, response);
  EXPECT_NEAR(sum.item<double>(), (per_token[0][2] + per_token[0][3]).item<double>(), 1e-6);
  EXPECT_LT(sum.item<double>(), 0.0);
}

// The chunked log-probs equal log_softmax + gather, values and gradients, for chunk sizes that divide the
// vocabulary, that do not, and that exceed it.
TEST(ChunkedLogprobs, EqualTheFullLogSoftmaxInValueAndGradient) {
  torch::manual_seed(3);
  auto h0 = torch::randn({7, 5}), w0 = torch::randn({23, 5}) * 2;
  auto targets = torch::tensor({0, 22, 5, 5, 11, 17, 3}, torch::kInt64);
  auto h = h0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
  auto reference = torch::log_softmax(h.matmul(w.t()), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
  auto weights = torch::linspace(0.5, 2.0, 7);  // a non-uniform upstream gradient
  (reference * weights).sum().backward();
  for (int64_t chunk : {1, 4, 23, 100}) {
    auto hc = h0.clone().set_requires_grad(true), wc = w0.clone().set_requires_grad(true);
    auto logp = chunked_token_logprobs(hc, wc, targets, chunk);
    EXPECT_LT(max_abs_diff(logp, reference.detach()), 1e-5) << chunk;
    (logp * weights).sum().backward();
    EXPECT_LT(max_abs_diff(hc.grad(), h.grad()), 1e-5) << chunk;
    EXPECT_LT(max_abs_diff(wc.grad(), w.grad()), 1e-5) << chunk;
  }
  EXPECT_THROW(chunked_token_logprobs(h0, w0, targets, 0), Error);
}

TEST(ChunkedLogprobs, ResponseSumsEqualTheFullLogitsOnARealModel) {
  torch::NoGradGuard no_grad;
  auto model = load_causal_lm(resolve_model_path("tinystories-656k"));
  auto ids = torch::tensor({{1, 400, 261, 275, 300, 41, 310}, {1, 500, 200, 222, 0, 0, 0}}, torch::kInt64);
  auto mask = torch::tensor({{1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0, 0}}, torch::kInt64);
  auto response = torch::tensor({{0, 0, 0, 1, 1, 1, 1}, {0, 0, 1, 1, 0, 0, 0}}, torch::kInt64);
  auto out = model->forward(ids, mask);
  auto full = response_logprobs(out.logits, ids, response);
  auto chunked = response_logprobs_chunked(out.hidden, model->output_weight(), ids, response, 100);
  EXPECT_LT(max_abs_diff(chunked, full), 1e-5);
  EXPECT_LT(full[1].item<double>(), 0.0);
}

TEST(Safetensors, SaveIsByteIdenticalToTransformersAndRoundTrips) {
  for (const char* name : {"llama", "gpt2", "gemma"}) {
    std::string dir = shared_path(std::string("fixtures/hf/") + name);
    auto original = load_safetensors(dir + "/model.safetensors");
    auto out = temp_dir(std::string("st_") + name);
    save_safetensors((out / "model.safetensors").string(), original);
    EXPECT_TRUE(read_file((out / "model.safetensors").string()) == read_file(dir + "/model.safetensors"))
        << name << ": bytes differ from the transformers-written file";
    // A model saved by grm loads back bit-identically.
    auto model = load_causal_lm(dir);
    save_causal_lm(model, (out / "saved").string());
    auto reloaded = load_causal_lm((out / "saved").string());
    auto a = model->hf_state_dict(), b = reloaded->hf_state_dict();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [key, value] : a) EXPECT_TRUE(torch::equal(value, b.at(key))) << key;
    fs::remove_all(out);
  }
}

TEST(Safetensors, ShardedCheckpointsLoadThroughTheIndex) {
  auto original = load_safetensors(shared_path("fixtures/hf/llama/model.safetensors"));
  auto out = temp_dir("sharded");
  save_safetensors_sharded(out.string(), original, 200000);
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  auto loaded = load_safetensors(out.string());
  ASSERT_EQ(loaded.size(), original.size());
  for (const auto& [key, value] : original) EXPECT_TRUE(torch::equal(value, loaded.at(key))) << key;
  fs::remove_all(out);
}

TEST(Safetensors, HalfPrecisionStorageLoadsIntoFloat32) {
  auto out = temp_dir("bf16");
  auto tensors = load_safetensors(shared_path("fixtures/hf/llama/model.safetensors"));
  for (auto& [key, value] : tensors) value = value.to(torch::kBFloat16);
  save_safetensors((out / "model.safetensors").string(), tensors);
  fs::copy_file(shared_path("fixtures/hf/llama/config.json"), out / "config.json");
  auto model = load_causal_lm(out.string());
  auto reference = load_causal_lm(shared_path("fixtures/hf/llama"));
  auto w = model->hf_state_dict().at("model.embed_tokens.weight");
  EXPECT_EQ(w.scalar_type(), torch::kFloat32);
  auto r = reference->hf_state_dict().at("model.embed_tokens.weight");
  EXPECT_LT(max_abs_diff(w, r), 1e-2);  // bf16 keeps 8 bits of mantissa
  EXPECT_GT(max_abs_diff(w, r), 0.0);
  fs::remove_all(out);
}

// Writes a broken variant of the llama fixture and expects an error whose message holds `expected`.
void expect_load_error(const std::string& name, const std::function<void(const fs::path&)>& breaker,
                       const std::string& expected) {
  auto dir = temp_dir("bad_" + name);
  fs::copy(shared_path("fixtures/hf/llama"), dir, fs::copy_options::recursive);
  breaker(dir);
  try {
    load_causal_lm(dir.string());
    ADD_FAILURE() << name << ": loading succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << name << ": " << e.what();
  }
  fs::remove_all(dir);
}

void rewrite(const fs::path& file, const std::function<std::string(std::string)>& edit) {
  write_file_atomic(file.string(), edit(read_file(file.string())));
}

TEST(Safetensors, MalformedInputsGiveErrorsNamingFileAndTensor) {
  expect_load_error(
      "truncated",
      [](const fs::path& d) {
        rewrite(d / "model.safetensors", [](std::string s) { return s.substr(0, s.size() / 2); });
      },
      "truncated");
  expect_load_error(
      "tiny", [](const fs::path& d) { write_file_atomic((d / "model.safetensors").string(), "abc"); },
      "too short");
  expect_load_error(
      "header_length",
      [](const fs::path& d) {
        rewrite(d / "model.safetensors", [](std::string s) {
          s[6] = '\x7f';
          return s;
        });
      },
      "header claims");
  expect_load_error(
      "bad_json",
      [](const fs::path& d) {
        rewrite(d / "model.safetensors", [](std::string s) {
          s[8] = '[';
          s[9] = '}';
          return s;
        });
      },
      "not valid JSON");
  auto replace_in_file = [](const fs::path& f, const std::string& from, const std::string& to) {
    rewrite(f, [&](std::string s) {
      auto at = s.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      if (at != std::string::npos) s.replace(at, from.size(), to);
      return s;
    });
  };
  expect_load_error(
      "missing_tensor",
      [&](const fs::path& d) {
        replace_in_file(d / "model.safetensors", "\"model.norm.weight\"", "\"model.norm.weighX\"");
      },
      "missing tensor 'model.norm.weight'");
  expect_load_error(
      "wrong_dtype",
      [&](const fs::path& d) { replace_in_file(d / "model.safetensors", "\"F32\"", "\"Q99\""); },
      "dtype 'Q99'");
  expect_load_error(
      "missing_file", [](const fs::path& d) { fs::remove(d / "model.safetensors"); }, "no model.safetensors");
  auto edit_config = [](const fs::path& d, const std::function<void(nlohmann::json&)>& edit) {
    auto config = nlohmann::json::parse(read_file((d / "config.json").string()));
    edit(config);
    write_file_atomic((d / "config.json").string(), config.dump());
  };
  expect_load_error(
      "shape",
      [&](const fs::path& d) {
        edit_config(
            d, [](nlohmann::json& c) { c["intermediate_size"] = c["intermediate_size"].get<int>() + 1; });
      },
      "has shape");
  expect_load_error(
      "unknown_type",
      [&](const fs::path& d) { edit_config(d, [](nlohmann::json& c) { c["model_type"] = "mamba"; }); },
      "model_type 'mamba' is not supported");
  expect_load_error(
      "config_json",
      [&](const fs::path& d) { rewrite(d / "config.json", [](std::string s) { return "{" + s; }); },
      "config.json: not valid JSON");
  expect_load_error(
      "config_key",
      [&](const fs::path& d) { edit_config(d, [](nlohmann::json& c) { c.erase("hidden_size"); }); },
      "missing required key 'hidden_size'");
  expect_load_error(
      "config_type",
      [&](const fs::path& d) { edit_config(d, [](nlohmann::json& c) { c["num_hidden_layers"] = "two"; }); },
      "'num_hidden_layers' has the wrong type");
}

}  // namespace
