#include "model/model_loader.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "base/error.h"
#include "format/safetensors.h"
#include "model/llama/llama2c.h"

namespace nibble {
namespace fs = std::filesystem;
namespace {

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  NIBBLE_CHECK(out.good(), "{}: cannot create", path.string());
  out << text;
  out.close();
  NIBBLE_CHECK(out.good(), "{}: write failed", path.string());
}

constexpr uint64_t kFnvOffset = 1469598103934665603ull, kFnvPrime = 1099511628211ull;

// FNV-1a 64 of a value's bytes, continuing from `h`.
uint64_t fnv1a(uint64_t value, uint64_t h) {
  for (int i = 0; i < 8; ++i) {
    h ^= uint8_t(value >> (8 * i));
    h *= kFnvPrime;
  }
  return h;
}

// FNV-1a 64 of a file's bytes, continuing from `h`.
uint64_t content_hash(const fs::path& path, uint64_t h) {
  std::ifstream in(path, std::ios::binary);
  NIBBLE_CHECK(in.good(), "{}: cannot open", path.string());
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h ^= uint8_t(buf[i]);
      h *= kFnvPrime;
    }
  }
  return h;
}

fs::path cache_root() {
  if (const char* d = std::getenv("NIBBLE_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return fs::path(d) / "nibble";
  if (const char* d = std::getenv("HOME"); d && *d) return fs::path(d) / ".cache" / "nibble";
  return fs::temp_directory_path() / "nibble-cache";
}

bool is_hf_directory(const fs::path& p) {
  return fs::is_directory(p) && fs::exists(p / "config.json");
}

}  // namespace

Llama2cFiles find_llama2c_files(const fs::path& input) {
  Llama2cFiles f;
  fs::path dir = input;
  if (fs::is_regular_file(input)) {
    f.model = input;
    dir = input.parent_path();
  }
  NIBBLE_CHECK(fs::is_directory(dir), "{}: no such model directory or file", input.string());
  std::vector<fs::path> models, tokenizers;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".bin") continue;
    const std::string stem = e.path().stem().string();
    (stem.rfind("tok", 0) == 0 ? tokenizers : models).push_back(e.path());
  }
  if (f.model.empty()) {
    NIBBLE_CHECK(models.size() == 1,
                 "{}: expected a Hugging Face model (config.json) or exactly one llama2.c model "
                 ".bin, found {} .bin model files",
                 input.string(), models.size());
    f.model = models[0];
  }
  if (tokenizers.size() == 1) f.tokenizer = tokenizers[0];
  return f;
}

void convert_llama2c(const fs::path& model_bin, const fs::path& tokenizer_bin, const fs::path& out) {
  const Llama2cModel ckpt = read_llama2c(model_bin, /*hf_layout=*/true);
  fs::create_directories(out.parent_path().empty() ? fs::path(".") : out.parent_path());
  const fs::path tmp = fs::path(out.string() + fmt::format(".tmp-{}", ::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    HfConfig hf = ckpt.config.to_hf();
    write_text(tmp / "config.json", hf.to_json());
    std::vector<TensorSpec> specs;
    for (const TensorView* t : ckpt.tensors->tensors()) {
      specs.push_back({t->name, t->dtype, t->shape, [t](uint8_t* dst, size_t n) {
                         NIBBLE_CHECK(n == t->nbytes, "tensor {}: size mismatch", t->name);
                         std::memcpy(dst, t->data, n);
                       }});
    }
    write_checkpoint(tmp, specs,
                     {{"format", "pt"},
                      {"converted_from", model_bin.filename().string() + " (llama2.c)"}});
    if (!tokenizer_bin.empty()) {
      const Llama2cVocab vocab = read_llama2c_tokenizer(tokenizer_bin, ckpt.config.vocab);
      write_text(tmp / "tokenizer.json", llama2c_tokenizer_json(vocab));
      write_text(tmp / "tokenizer_config.json", llama2c_tokenizer_config_json(ckpt.config.max_seq));
    }
    // llama2.c models end a story with BOS (run.c stops there), so BOS also stops generation.
    write_text(tmp / "generation_config.json",
               "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": [2, 1]\n}\n");
    fs::remove_all(out);
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

uint64_t conversion_cache_key(const Llama2cFiles& files, uint64_t format_version) {
  uint64_t key = fnv1a(format_version, kFnvOffset);
  key = content_hash(files.model, key);
  if (!files.tokenizer.empty()) key = content_hash(files.tokenizer, key);
  return key;
}

fs::path conversion_cache_directory(const Llama2cFiles& files) {
  return cache_root() / fmt::format("{}-hf-{:016x}", files.model.stem().string(),
                                    conversion_cache_key(files, kConvertFormatVersion));
}

fs::path resolve_model_directory(const fs::path& input, std::string* origin) {
  if (origin) origin->clear();
  if (is_hf_directory(input)) return input;
  NIBBLE_CHECK(fs::exists(input), "{}: no such model directory or file", input.string());
  const Llama2cFiles files = find_llama2c_files(input);
  const fs::path dir = conversion_cache_directory(files);
  if (is_hf_directory(dir)) {
    if (origin)
      *origin = fmt::format("using cached conversion {} of {} (llama2.c)", dir.string(),
                            files.model.string());
    return dir;
  }
  convert_llama2c(files.model, files.tokenizer, dir);
  if (origin)
    *origin = fmt::format("converted {} (llama2.c) with nibble convert into cache {}",
                          files.model.string(), dir.string());
  return dir;
}

LoadedModel load_model(const fs::path& input, const ModelLoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  LoadedModel out;
  out.directory = resolve_model_directory(input, &out.origin);
  out.hf = HfConfig::load(out.directory / "config.json");
  const LlamaConfig config = LlamaConfig::from_hf(out.hf);
  const CheckpointTensors tensors(out.directory);
  out.model = LlamaModel::build(config, tensors, options);
  out.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace nibble
