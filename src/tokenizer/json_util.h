// Field access for tokenizer.json / tokenizer_config.json with errors that name the field.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "base/error.h"

namespace nibble::tokenizer {

inline const nlohmann::json& json_field(const nlohmann::json& j, const char* key, const std::string& what) {
  NIBBLE_CHECK(j.is_object(), "{} must be a JSON object", what);
  const auto it = j.find(key);
  NIBBLE_CHECK(it != j.end(), "{}.{} is missing", what, key);
  return *it;
}

inline std::string json_string(const nlohmann::json& j, const char* key, const std::string& what) {
  const nlohmann::json& v = json_field(j, key, what);
  NIBBLE_CHECK(v.is_string(), "{}.{} must be a string (got {})", what, key, v.type_name());
  return v.get<std::string>();
}

inline bool json_bool(const nlohmann::json& j, const char* key, const std::string& what, bool fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  NIBBLE_CHECK(it->is_boolean(), "{}.{} must be true or false (got {})", what, key, it->type_name());
  return it->get<bool>();
}

}  // namespace nibble::tokenizer
