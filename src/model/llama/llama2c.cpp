#include "model/llama/llama2c.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "base/error.h"

namespace nibble {
namespace {

std::vector<uint8_t> read_file(const std::filesystem::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  NIBBLE_CHECK(in.good(), "{}: cannot open the {}", path.string(), what);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Permutes the rows of a [heads * d, cols] matrix from interleaved to rotate-half pairs.
std::vector<float> permute_rows(const float* w, size_t heads, size_t d, size_t cols) {
  std::vector<float> out(heads * d * cols);
  const size_t half = d / 2;
  for (size_t h = 0; h < heads; ++h)
    for (size_t j = 0; j < half; ++j)
      for (size_t c = 0; c < 2; ++c)
        std::memcpy(out.data() + (h * d + c * half + j) * cols, w + (h * d + 2 * j + c) * cols,
                    cols * sizeof(float));
  return out;
}

// SentencePiece's word-boundary mark; llama2.c writes a plain space instead.
constexpr const char* kSpaceMark = "\xe2\x96\x81";

std::string to_sentencepiece(const std::string& piece) {
  std::string out;
  for (char ch : piece) {
    if (ch == ' ') out += kSpaceMark;
    else out += ch;
  }
  return out;
}

bool is_byte_piece(const std::string& p) {
  return p.size() == 6 && p.rfind("<0x", 0) == 0 && p.back() == '>';
}

size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xe) return 3;
  if ((lead >> 3) == 0x1e) return 4;
  return 1;
}

}  // namespace

Llama2cModel read_llama2c(const std::filesystem::path& path, bool hf_layout) {
  const std::vector<uint8_t> bytes = read_file(path, "llama2.c checkpoint");
  constexpr size_t kHeader = 7 * sizeof(int32_t);
  NIBBLE_CHECK(bytes.size() >= kHeader, "{}: {} bytes, too short for the 28-byte llama2.c header",
               path.string(), bytes.size());
  int32_t h[7];
  std::memcpy(h, bytes.data(), kHeader);
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                          "seq_len"};
  for (int i = 0; i < 7; ++i)
    NIBBLE_CHECK(h[i] != 0 && (i == 5 || h[i] > 0) && std::abs(int64_t(h[i])) < (1 << 24),
                 "{}: header field {} = {} is not a valid size (not a llama2.c checkpoint?)",
                 path.string(), names[i], h[i]);
  const size_t dim = size_t(h[0]), hidden = size_t(h[1]), layers = size_t(h[2]),
               heads = size_t(h[3]), kv_heads = size_t(h[4]), seq = size_t(h[6]);
  const bool shared = h[5] > 0;
  const size_t vocab = size_t(std::abs(h[5]));
  NIBBLE_CHECK(dim % heads == 0 && heads % kv_heads == 0 && (dim / heads) % 2 == 0,
               "{}: dim {}, n_heads {}, n_kv_heads {} do not make whole, even heads",
               path.string(), dim, heads, kv_heads);
  const size_t d = dim / heads, kv_dim = kv_heads * d;

  LlamaConfig c;
  c.family = LlamaFamily::llama;
  c.hidden = dim;
  c.ffn = hidden;
  c.layers = layers;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.head_dim = d;
  c.vocab = vocab;
  c.max_seq = seq;
  c.norm_eps = 1e-5f;  // run.c's rmsnorm
  c.rope_theta = 10000.0;
  c.rope_interleaved = !hf_layout;
  c.tied_embeddings = shared;
  c.bos_ids = {1};
  c.eos_ids = {2};

  const size_t floats = vocab * dim + layers * (2 * dim + dim * dim * 2 + 2 * kv_dim * dim +
                                                3 * dim * hidden) +
                        dim + seq * d + (shared ? 0 : vocab * dim);
  const size_t expected = kHeader + floats * sizeof(float);
  NIBBLE_CHECK(bytes.size() == expected,
               "{}: {} bytes, but the header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, "
               "n_kv_heads {}, vocab_size {}, seq_len {}) needs {}",
               path.string(), bytes.size(), h[0], h[1], h[2], h[3], h[4], h[5], h[6], expected);

  Llama2cModel out{c, std::make_unique<MemoryTensors>(path.string() + " (llama2.c)")};
  MemoryTensors& t = *out.tensors;
  const float* p = reinterpret_cast<const float*>(bytes.data() + kHeader);
  std::vector<float> aligned(floats);  // the file's floats, aligned
  std::memcpy(aligned.data(), p, floats * sizeof(float));
  const float* f = aligned.data();
  auto take = [&](size_t n) {
    const float* at = f;
    f += n;
    return at;
  };
  auto per_layer = [&](const char* suffix, size_t rows, size_t cols, bool permute, size_t ph) {
    const float* base = take(layers * rows * cols);
    for (size_t l = 0; l < layers; ++l) {
      const float* w = base + l * rows * cols;
      const std::string name = fmt::format("model.layers.{}.{}", l, suffix);
      std::vector<int64_t> shape = cols == 1 ? std::vector<int64_t>{int64_t(rows)}
                                             : std::vector<int64_t>{int64_t(rows), int64_t(cols)};
      if (permute && hf_layout) {
        const std::vector<float> pw = permute_rows(w, ph, d, cols);
        t.add(name, DType::F32, shape, pw.data());
      } else {
        t.add(name, DType::F32, shape, w);
      }
    }
  };
  t.add("model.embed_tokens.weight", DType::F32, {int64_t(vocab), int64_t(dim)}, take(vocab * dim));
  per_layer("input_layernorm.weight", dim, 1, false, 0);
  per_layer("self_attn.q_proj.weight", dim, dim, true, heads);
  per_layer("self_attn.k_proj.weight", kv_dim, dim, true, kv_heads);
  per_layer("self_attn.v_proj.weight", kv_dim, dim, false, 0);
  per_layer("self_attn.o_proj.weight", dim, dim, false, 0);
  per_layer("post_attention_layernorm.weight", dim, 1, false, 0);
  per_layer("mlp.gate_proj.weight", hidden, dim, false, 0);
  per_layer("mlp.down_proj.weight", dim, hidden, false, 0);
  per_layer("mlp.up_proj.weight", hidden, dim, false, 0);
  t.add("model.norm.weight", DType::F32, {int64_t(dim)}, take(dim));
  take(seq * d);  // legacy freq_cis_real and freq_cis_imag: seq * d/2 each
  if (!shared) t.add("lm_head.weight", DType::F32, {int64_t(vocab), int64_t(dim)}, take(vocab * dim));
  return out;
}

Llama2cVocab read_llama2c_tokenizer(const std::filesystem::path& path, size_t vocab_size) {
  const std::vector<uint8_t> bytes = read_file(path, "llama2.c tokenizer");
  Llama2cVocab v;
  size_t off = 0;
  auto read = [&](void* dst, size_t n, const char* what, size_t id) {
    NIBBLE_CHECK(off + n <= bytes.size(), "{}: truncated at token {} ({}); expected {} tokens",
                 path.string(), id, what, vocab_size);
    std::memcpy(dst, bytes.data() + off, n);
    off += n;
  };
  read(&v.max_token_length, 4, "max_token_length", 0);
  for (size_t id = 0; id < vocab_size; ++id) {
    float score;
    int32_t len;
    read(&score, 4, "score", id);
    read(&len, 4, "length", id);
    NIBBLE_CHECK(len >= 0 && len <= std::max(v.max_token_length, 64),
                 "{}: token {} has length {} (max_token_length {})", path.string(), id, len,
                 v.max_token_length);
    std::string piece(size_t(len), '\0');
    read(piece.data(), size_t(len), "bytes", id);
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
  }
  NIBBLE_CHECK(off == bytes.size(), "{}: {} bytes left after {} tokens (vocabulary size mismatch?)",
               path.string(), bytes.size() - off, vocab_size);
  return v;
}

std::string llama2c_tokenizer_json(const Llama2cVocab& v) {
  using nlohmann::json;
  NIBBLE_CHECK(v.pieces.size() >= 3 + 256, "llama2.c vocabulary of {} tokens lacks byte pieces",
               v.pieces.size());
  const char* specials[3] = {"<unk>", "<s>", "</s>"};
  std::vector<std::string> pieces(v.pieces.size());
  json vocab = json::object();
  std::map<std::string, size_t> id_of;
  for (size_t id = 0; id < v.pieces.size(); ++id) {
    pieces[id] = id < 3 ? specials[id] : to_sentencepiece(v.pieces[id]);
    NIBBLE_CHECK(id_of.emplace(pieces[id], id).second,
                 "llama2.c vocabulary: piece \"{}\" appears twice (ids {} and {})", pieces[id],
                 id_of[pieces[id]], id);
    vocab[pieces[id]] = id;
  }
  // Merges: every split of a piece into two pieces of the vocabulary, ranked as llama2.c's
  // encoder merges: the merged piece's score first (higher earlier), then its id.
  std::vector<std::tuple<float, size_t, size_t, size_t>> merges;  // -score, id, left, right
  for (size_t id = 3; id < pieces.size(); ++id) {
    const std::string& p = pieces[id];
    if (is_byte_piece(v.pieces[id])) continue;
    for (size_t cut = utf8_length(uint8_t(p[0])); cut < p.size();
         cut += utf8_length(uint8_t(p[cut]))) {
      auto l = id_of.find(p.substr(0, cut)), r = id_of.find(p.substr(cut));
      if (l == id_of.end() || r == id_of.end() || l->second < 3 || r->second < 3) continue;
      merges.emplace_back(-v.scores[id], id, l->second, r->second);
    }
  }
  std::stable_sort(merges.begin(), merges.end());
  json merge_list = json::array();
  for (const auto& [score, id, l, r] : merges) merge_list.push_back(pieces[l] + " " + pieces[r]);

  json added = json::array();
  for (size_t id = 0; id < 3; ++id)
    added.push_back({{"id", id}, {"content", specials[id]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", true}});
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      json::array({{{"type", "Prepend"}, {"prepend", kSpaceMark}},
                                   {{"type", "Replace"},
                                    {"pattern", {{"String", " "}}},
                                    {"content", kSpaceMark}}})}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                            {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
                            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", json::array({1})}, {"tokens", json::array({"<s>"})}}}}}};
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders", json::array({{{"type", "Replace"},
                                 {"pattern", {{"String", kSpaceMark}}},
                                 {"content", " "}},
                                {{"type", "ByteFallback"}},
                                {{"type", "Fuse"}},
                                {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merge_list}};
  return j.dump(1) + "\n";
}

std::string llama2c_tokenizer_config_json(size_t max_length) {
  nlohmann::json j = {{"add_bos_token", true},
                      {"add_eos_token", false},
                      {"bos_token", "<s>"},
                      {"eos_token", "</s>"},
                      {"unk_token", "<unk>"},
                      {"pad_token", nullptr},
                      {"clean_up_tokenization_spaces", false},
                      {"legacy", true},
                      {"model_max_length", max_length},
                      {"tokenizer_class", "LlamaTokenizer"}};
  return j.dump(2) + "\n";
}

}  // namespace nibble
