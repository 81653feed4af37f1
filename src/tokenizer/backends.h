// The two Tokenizer implementations behind Tokenizer::load (internal header).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <memory>

#include "tokenizer/tokenizer.h"

namespace nibble::tokenizer {

// tokenizer.json; `config` is tokenizer_config.json (or null), `generation` generation_config.json
// (or null).
std::unique_ptr<Tokenizer> make_hf_tokenizer(const nlohmann::json& tokenizer,
                                             const nlohmann::json& config,
                                             const nlohmann::json& generation,
                                             const std::string& source);

// tokenizer.model through libsentencepiece.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& model,
                                                        const nlohmann::json& config,
                                                        const nlohmann::json& generation);

// tokenizer_config.json's token fields are a string, null or {"__type": "AddedToken", "content": ...}.
std::string config_token(const nlohmann::json& config, const char* key);

}  // namespace nibble::tokenizer
