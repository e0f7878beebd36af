// SentencePiece .model files through libsentencepiece (policy/tokenizer/sentencepiece_processor.hpp), so ids
// are the reference library's own. Two additions follow transformers' LlamaTokenizer, which wraps the same
// library: encode(text, true) adds BOS (and EOS) as tokenizer_config.json's add_bos_token / add_eos_token
// say (default: BOS only), and the texts of the special pieces (<s>, </s>, <unk>: control and unknown
// pieces) are matched in the raw text as single tokens, the parts between encoded separately. Text
// without them encodes exactly as sp.encode() does.
#include "core/error.hpp"
#include "policy/tokenizer/loaders.hpp"
#include "policy/tokenizer/sentencepiece_processor.hpp"
#include "policy/tokenizer/unicode.hpp"

namespace grm {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& file, const nlohmann::json* config)
      : file_(file), processor_(file) {
    auto id_or_none = [](int id) { return id >= 0 ? std::optional<int64_t>(id) : std::nullopt; };
    bos_id = id_or_none(processor_.bos_id());
    eos_id = id_or_none(processor_.eos_id());
    pad_id = id_or_none(processor_.pad_id());
    if (config && config->is_object()) {
      if (config->contains("add_bos_token") && (*config)["add_bos_token"].is_boolean())
        file_add_bos_ = (*config)["add_bos_token"].get<bool>();
      if (config->contains("add_eos_token") && (*config)["add_eos_token"].is_boolean())
        file_add_eos_ = (*config)["add_eos_token"].get<bool>();
    }
    n_pieces_ = processor_.vocab_size();
    for (int id = 0; id < n_pieces_; ++id)
      if (processor_.is_control(id) || processor_.is_unknown(id))
        if (std::string piece = processor_.id_to_piece(id); !piece.empty())
          special_pieces_.emplace_back(piece, id);
  }

  std::vector<int64_t> encode(std::string_view input, bool add_special_tokens) const override {
    std::string text = unicode::is_valid_utf8(input) ? std::string(input) : unicode::to_valid_utf8(input);
    std::vector<int64_t> ids;
    size_t done = 0;
    for (size_t pos = 0; pos < text.size();) {
      auto [id, length] = special_at(text, pos);
      if (length == 0) {
        ++pos;
        continue;
      }
      encode_plain(std::string_view(text).substr(done, pos - done), ids);
      ids.push_back(id);
      pos += length;
      done = pos;
    }
    encode_plain(std::string_view(text).substr(done), ids);
    if (!add_special_tokens) return ids;
    std::vector<int64_t> prefix, suffix;
    if (file_add_bos_ && bos_id) prefix.push_back(*bos_id);
    if (file_add_eos_ && eos_id) suffix.push_back(*eos_id);
    apply_overrides(prefix, suffix);
    ids.insert(ids.begin(), prefix.begin(), prefix.end());
    ids.insert(ids.end(), suffix.begin(), suffix.end());
    return ids;
  }

  // SentencePiece's own decoding drops control pieces; with skip_special_tokens off they are kept as text.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (!run.empty()) out += processor_.decode(run);
      run.clear();
    };
    for (int64_t id : ids) {
      if (id < 0 || id >= vocab_size()) continue;  // ids outside the vocabulary are dropped
      if (!skip_special_tokens && processor_.is_control(int(id))) {
        flush();
        out += processor_.id_to_piece(int(id));
      } else {
        run.push_back(int(id));
      }
    }
    flush();
    return out;
  }

  std::string id_to_piece(int64_t id) const override {
    if (id < 0 || id >= vocab_size())
      fail("{}: id {} is not in the vocabulary (size {})", file_, id, vocab_size());
    return processor_.id_to_piece(int(id));
  }

  std::optional<int64_t> piece_to_id(std::string_view piece) const override {
    int id = processor_.piece_to_id(piece);  // the unknown id for pieces it does not have
    if (processor_.is_unknown(id) && processor_.id_to_piece(id) != piece) return std::nullopt;
    return id;
  }

  int64_t vocab_size() const override { return n_pieces_; }

 private:
  void encode_plain(std::string_view text, std::vector<int64_t>& ids) const {
    if (text.empty()) return;
    std::vector<int> piece_ids = processor_.encode(text);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }

  // The longest special piece starting at text[pos]: (id, length), or (-1, 0).
  std::pair<int64_t, size_t> special_at(std::string_view text, size_t pos) const {
    std::pair<int64_t, size_t> best{-1, 0};
    for (const auto& [piece, id] : special_pieces_)
      if (piece.size() > best.second && text.compare(pos, piece.size(), piece) == 0)
        best = {id, piece.size()};
    return best;
  }

  std::string file_;
  SentencePieceProcessor processor_;
  int n_pieces_ = 0;
  bool file_add_bos_ = true, file_add_eos_ = false;
  std::vector<std::pair<std::string, int64_t>> special_pieces_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& file,
                                                        const nlohmann::json* config) {
  return std::make_unique<SentencePieceTokenizer>(file, config);
}

}  // namespace grm
