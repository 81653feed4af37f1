// Flag checks shared by the benchmarks: CLI11 validators whose refusals name the value.
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdlib>
#include <string>

namespace nibble::bench {

// A positive decimal integer: "0", "-1", "2.5" and "x" are refused (values past the option's
// type are refused by CLI11's conversion).
inline CLI::Validator positive_integer() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        const bool digits = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
        if (digits && s.find_first_not_of('0') != std::string::npos) return "";
        return "a positive integer is needed, not '" + s + "'";
      },
      "POSITIVE");
}

// A positive finite number.
inline CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (!s.empty() && *end == '\0' && std::isfinite(v) && v > 0) return "";
        return "a positive number is needed, not '" + s + "'";
      },
      "POSITIVE");
}

}  // namespace nibble::bench
