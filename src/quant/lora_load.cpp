// load_lora_adapter: reads an adapter directory (kept apart from the pure target logic).
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "format/safetensors.h"
#include "quant/lora.h"

namespace nibble {

LoraAdapter load_lora_adapter(const std::string& directory) {
  namespace fs = std::filesystem;
  const fs::path config_path = fs::path(directory) / "adapter_config.json";
  std::ifstream in(config_path);
  NIBBLE_CHECK(in.good(), "--lora {}: cannot open {} (a PEFT adapter directory holds "
               "adapter_config.json and adapter_model.safetensors)", directory, config_path.string());
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    NIBBLE_THROW("{}: malformed JSON: {}", config_path.string(), e.what());
  }
  std::vector<std::string> names;
  const fs::path weights = fs::path(directory) / "adapter_model.safetensors";
  if (fs::exists(weights)) {
    SafetensorsFile file(weights);
    for (const auto& t : file.tensors()) names.push_back(t.name);
  }
  return lora_adapter_from_config(config, names, directory);
}

}  // namespace nibble
