#include "tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "tokenizer/backends.h"
#include "tokenizer/text.h"

namespace nibble {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  NIBBLE_CHECK(in, "{}: cannot open", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return json::parse(buffer.str());
  } catch (const json::parse_error& e) {
    NIBBLE_THROW("{}: invalid JSON: {}", path.string(), e.what());
  }
}

json read_optional_json(const fs::path& path) {
  if (path.empty() || !fs::exists(path)) return json();
  return read_json(path);
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load_files(const fs::path& tokenizer_json, const fs::path& tokenizer_config,
                                                 const fs::path& generation_config) {
  const json tok = read_json(tokenizer_json);
  const json config = read_optional_json(tokenizer_config);
  const json generation = read_optional_json(generation_config);
  return tokenizer::make_hf_tokenizer(tok, config, generation, tokenizer_json.string());
}

namespace {
// A template shipped as its own file (newer Hugging Face layout) when the config carries none.
void attach_template_file(Tokenizer& tok, const fs::path& dir, std::string& chat_template) {
  const fs::path file = dir / "chat_template.jinja";
  if (!chat_template.empty() || !fs::exists(file)) return;
  std::ifstream in(file, std::ios::binary);
  NIBBLE_CHECK(in, "{}: cannot open", file.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  chat_template = buffer.str();
  (void)tok;
}
}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const fs::path& model_dir) {
  std::unique_ptr<Tokenizer> tok = load_without_template_file(model_dir);
  const fs::path dir = fs::is_regular_file(model_dir) ? model_dir.parent_path() : model_dir;
  attach_template_file(*tok, dir, tok->chat_template_);
  return tok;
}

std::unique_ptr<Tokenizer> Tokenizer::load_without_template_file(const fs::path& model_dir) {
  if (fs::is_regular_file(model_dir)) {  // a tokenizer.json or tokenizer.model given directly
    const fs::path dir = model_dir.parent_path();
    if (model_dir.extension() == ".model")
      return tokenizer::make_sentencepiece_tokenizer(model_dir, read_optional_json(dir / "tokenizer_config.json"),
                                                     read_optional_json(dir / "generation_config.json"));
    return load_files(model_dir, dir / "tokenizer_config.json", dir / "generation_config.json");
  }
  NIBBLE_CHECK(fs::is_directory(model_dir), "{}: no such model directory", model_dir.string());
  if (fs::exists(model_dir / "tokenizer.json"))
    return load_files(model_dir / "tokenizer.json", model_dir / "tokenizer_config.json",
                      model_dir / "generation_config.json");
  if (fs::exists(model_dir / "tokenizer.model"))
    return tokenizer::make_sentencepiece_tokenizer(model_dir / "tokenizer.model",
                                                   read_optional_json(model_dir / "tokenizer_config.json"),
                                                   read_optional_json(model_dir / "generation_config.json"));
  NIBBLE_THROW("{}: no tokenizer.json or tokenizer.model in the model directory", model_dir.string());
}

bool Tokenizer::is_stop(int32_t id) const {
  return std::binary_search(stop_ids_.begin(), stop_ids_.end(), id);
}

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

// The window technique: decode ids_[prefix_, end) and ids_[prefix_, read_) and emit the
// difference once it no longer ends in an incomplete character (U+FFFD from a cut sequence).
// Decoding a window rather than single ids keeps context-dependent decoders right (a leading
// space stripped only at the start of the text, bytes of one character spread over tokens).
std::string StreamingDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::span<const int32_t> all(ids_);
  const std::string before = tokenizer_.decode_without_cleanup(all.subspan(prefix_, read_ - prefix_), skip_special_);
  const std::string now = tokenizer_.decode_without_cleanup(all.subspan(prefix_), skip_special_);
  if (now.size() <= before.size() || now.ends_with("\xEF\xBF\xBD")) return {};
  std::string delta = now.starts_with(before) ? now.substr(before.size()) : now.substr(std::min(before.size(), now.size()));
  prefix_ = read_;
  read_ = ids_.size();
  return delta;
}

std::string StreamingDecoder::finish() {
  const std::span<const int32_t> all(ids_);
  const std::string before = tokenizer_.decode_without_cleanup(all.subspan(prefix_, read_ - prefix_), skip_special_);
  const std::string now = tokenizer_.decode_without_cleanup(all.subspan(prefix_), skip_special_);
  prefix_ = read_ = ids_.size();
  if (now.size() <= before.size()) return {};
  return now.starts_with(before) ? now.substr(before.size()) : now.substr(before.size());
}

}  // namespace nibble
