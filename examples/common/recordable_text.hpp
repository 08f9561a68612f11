#pragma once
// A CLI11 check shared by the programs (iat-train, iat-eval): text that their JSON files record must be
// valid UTF-8, which JSON requires. A path in another encoding is refused when the command line is read,
// not found when the run's results are written (and lost).

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <string>

namespace iat_examples {

/// The CLI11 validator: `app.add_option("--model", path)->check(recordable_text("the report"))`.
inline CLI::Validator recordable_text(const std::string& where) {
  return CLI::Validator(
      [where](std::string& text) -> std::string {
        try {
          (void)nlohmann::json(text).dump();
          return std::string();
        } catch (const nlohmann::json::type_error&) {
          return "must be UTF-8 text (it is recorded in " + where + "), got bytes that are not";
        }
      },
      "TEXT");
}

}  // namespace iat_examples
