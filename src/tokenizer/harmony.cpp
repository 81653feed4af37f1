#include "tokenizer/harmony.h"

#include <fmt/format.h>

#include <ctime>

#include "base/error.h"
#include "tokenizer/tokenizer.h"

namespace nibble::harmony {

using json = nlohmann::ordered_json;

namespace {

// Python json.dumps(ensure_ascii=False) with default separators: what the template's tojson gives.
std::string dumps(const json& j) {
  switch (j.type()) {
    case json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : j.items()) {
        out += (first ? "" : ", ") + dumps(json(k)) + ": " + dumps(v);
        first = false;
      }
      return out + "}";
    }
    case json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < j.size(); ++i) out += (i ? ", " : "") + dumps(j[i]);
      return out + "]";
    }
    case json::value_t::string: {
      std::string out = "\"";
      for (const char c : j.get_ref<const std::string&>()) {
        switch (c) {
          case '"': out += "\\\""; break;
          case '\\': out += "\\\\"; break;
          case '\n': out += "\\n"; break;
          case '\r': out += "\\r"; break;
          case '\t': out += "\\t"; break;
          case '\b': out += "\\b"; break;
          case '\f': out += "\\f"; break;
          default:
            if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
            else out.push_back(c);
        }
      }
      return out + "\"";
    }
    case json::value_t::number_float: {
      std::string s = fmt::format("{}", j.get<double>());
      if (s.find_first_of(".en") == std::string::npos) s += ".0";
      return s;
    }
    default: return j.dump();
  }
}

// Jinja truthiness of an optional member.
bool truthy(const json& obj, const char* key) {
  if (!obj.is_object() || !obj.contains(key)) return false;
  const json& v = obj[key];
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  if (v.is_array() || v.is_object()) return !v.empty();
  if (v.is_number()) return v.get<double>() != 0;
  return true;
}

std::string text_of(const json& obj, const char* key, const std::string& what) {
  if (!obj.contains(key) || obj[key].is_null()) return "";
  NIBBLE_CHECK(obj[key].is_string(), "{}.{} must be a string", what, key);
  return obj[key].get<std::string>();
}

bool in_required(const json& required, const std::string& name) {
  if (!required.is_array()) return false;
  for (const auto& r : required)
    if (r.is_string() && r.get<std::string>() == name) return true;
  return false;
}

// The published template's render_typescript_type, including its layout (some branches emit the
// newline and indentation of the template source).
std::string typescript_type(const json& spec) {
  const bool nullable = truthy(spec, "nullable");
  const json type = spec.is_object() && spec.contains("type") ? spec["type"] : json();
  if (type == "array") {
    std::string out;
    if (spec.contains("items")) {
      const json& items = spec["items"];
      const json it = items.is_object() && items.contains("type") ? items["type"] : json();
      if (it == "string") out = "string[]";
      else if (it == "number" || it == "integer") out = "number[]";
      else if (it == "boolean") out = "boolean[]";
      else {
        const std::string inner = typescript_type(items);
        size_t chars = 0;
        for (const char c : inner) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        out = inner == "object | object" || chars > 50 ? "any[]" : inner + "[]";
      }
    } else {
      out = "any[]";
    }
    return nullable ? out + " | null" : out;
  }
  if (type.is_array() && !type.empty()) {
    std::string out;
    for (size_t i = 0; i < type.size(); ++i) out += (i ? " | " : "") + (type[i].is_string() ? type[i].get<std::string>() : dumps(type[i]));
    return out;
  }
  if (truthy(spec, "oneOf")) {
    // The template's "object variants" flag is set inside a loop and so never survives it:
    // every oneOf is rendered variant by variant.
    std::string out;
    const json& variants = spec["oneOf"];
    for (size_t i = 0; i < variants.size(); ++i) {
      const json& v = variants[i];
      out += typescript_type(v);
      if (truthy(v, "description")) out += "// " + v["description"].get<std::string>();
      if (v.is_object() && v.contains("default")) out += "                    // default: " + dumps(v["default"]);
      if (i + 1 < variants.size()) out += " | \n";
    }
    return out;
  }
  if (type == "string") {
    if (truthy(spec, "enum")) {
      std::string out = "\"";
      for (size_t i = 0; i < spec["enum"].size(); ++i) out += (i ? "\" | \"" : "") + spec["enum"][i].get<std::string>();
      return out + "\"";
    }
    return nullable ? "string | null" : "string";
  }
  if (type == "number" || type == "integer") return "number";
  if (type == "boolean") return "boolean";
  if (type == "object") {
    if (!truthy(spec, "properties")) return "object";
    std::string out = "{\n";
    const json required = spec.contains("required") && !spec["required"].is_null() ? spec["required"] : json::array();
    size_t i = 0;
    for (const auto& [name, prop] : spec["properties"].items()) {
      out += name;
      if (!in_required(required, name)) out += "?";
      out += ": \n                " + typescript_type(prop);
      if (++i < spec["properties"].size()) out += ", ";
    }
    return out + "}";
  }
  return "any";
}

std::string tool_namespace(const json& tools) {
  std::string out = "## functions\n\nnamespace functions {\n\n";
  for (size_t t = 0; t < tools.size(); ++t) {
    const std::string what = fmt::format("tools[{}]", t);
    const json& tool = tools[t].contains("function") ? tools[t]["function"] : tools[t];
    out += "// " + text_of(tool, "description", what) + "\n";
    out += "type " + text_of(tool, "name", what) + " = ";
    const json params = tool.contains("parameters") ? tool["parameters"] : json();
    if (truthy(tool, "parameters") && truthy(params, "properties")) {
      out += "(_: {\n";
      const json required = params.contains("required") && !params["required"].is_null() ? params["required"] : json::array();
      for (const auto& [name, spec] : params["properties"].items()) {
        if (truthy(spec, "description")) out += "// " + spec["description"].get<std::string>() + "\n";
        out += name;
        if (!in_required(required, name)) out += "?";
        out += ": " + typescript_type(spec);
        if (spec.is_object() && spec.contains("default")) {
          const json& d = spec["default"];
          if (truthy(spec, "enum") || truthy(spec, "oneOf")) {
            NIBBLE_CHECK(d.is_string(), "{}: parameter {:?} has a non-string default with enum/oneOf", what, name);
            out += (truthy(spec, "enum") ? ", // default: " : "// default: ") + d.get<std::string>();
          } else {
            out += ", // default: " + dumps(d);
          }
        }
        out += ",\n";
      }
      out += "}) => any;\n\n";
    } else {
      out += "() => any;\n\n";
    }
  }
  return out + "} // namespace functions";
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

bool contains_channel_tags(const std::string& s) {
  return s.find("<|channel|>analysis<|message|>") != std::string::npos ||
         s.find("<|channel|>final<|message|>") != std::string::npos;
}

}  // namespace

bool is_harmony_tokenizer(const Tokenizer& tokenizer) {
  for (const char* t : {"<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>"})
    if (!tokenizer.piece_to_id(t)) return false;
  return true;
}

std::string render_conversation(const json& messages, const RenderOptions& options) {
  NIBBLE_CHECK(messages.is_array(), "harmony: messages must be a list");
  NIBBLE_CHECK(options.builtin_tools.empty(), "harmony: builtin tools (browser, python) are not supported by the "
                                              "built-in renderer; use the model's chat_template.jinja");
  const bool tools = options.tools.is_array() && !options.tools.empty();
  std::string out = "<|start|>system<|message|>";
  out += options.model_identity + "\n";
  out += "Knowledge cutoff: 2024-06\n";
  out += "Current date: " + (options.current_date.empty() ? today() : options.current_date) + "\n\n";
  out += "Reasoning: " + options.reasoning_effort + "\n\n";
  out += "# Valid channels: analysis, commentary, final. Channel must be included for every message.";
  if (tools) out += "\nCalls to these tools must go to the commentary channel: 'functions'.";
  out += "<|end|>";

  size_t first = 0;
  std::string developer;
  if (!messages.empty()) {
    const std::string role = messages[0].value("role", "");
    if (role == "developer" || role == "system") {
      developer = text_of(messages[0], "content", "messages[0]");
      first = 1;
    }
  }
  if (!developer.empty() || tools) {
    out += "<|start|>developer<|message|>";
    if (!developer.empty()) out += "# Instructions\n\n" + developer + "\n\n";
    if (tools) out += "# Tools\n\n" + tool_namespace(options.tools);
    out += "<|end|>";
  }

  std::string last_tool_call;
  bool have_tool_call = false;
  for (size_t i = first; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string what = fmt::format("messages[{}]", i);
    NIBBLE_CHECK(m.is_object() && m.contains("role"), "{} must be an object with a role", what);
    const std::string role = m["role"].get<std::string>();
    const bool last = i + 1 == messages.size();
    if (role == "assistant") {
      const std::string content = text_of(m, "content", what);
      const std::string thinking = text_of(m, "thinking", what);
      NIBBLE_CHECK(!contains_channel_tags(content), "{}: content contains <|channel|> tags; put analysis text in "
                                                    "\"thinking\" and the final answer in \"content\"", what);
      NIBBLE_CHECK(!contains_channel_tags(thinking), "{}: thinking contains <|channel|> tags", what);
      if (m.contains("tool_calls")) {
        bool future_final = false;
        for (size_t k = i + 1; k < messages.size(); ++k)
          if (messages[k].value("role", "") == "assistant" && !messages[k].contains("tool_calls")) future_final = true;
        NIBBLE_CHECK(m["tool_calls"].is_array() && !m["tool_calls"].empty(), "{}.tool_calls must be a non-empty list", what);
        json call = m["tool_calls"][0];
        if (truthy(call, "function")) call = call["function"];
        NIBBLE_CHECK(!(!content.empty() && !thinking.empty()),
                     "{}: an assistant message with tool calls cannot have both content and thinking", what);
        if (!content.empty() && !future_final)
          out += "<|start|>assistant<|channel|>analysis<|message|>" + content + "<|end|>";
        else if (!thinking.empty() && !future_final)
          out += "<|start|>assistant<|channel|>analysis<|message|>" + thinking + "<|end|>";
        const std::string name = text_of(call, "name", what + ".tool_calls[0]");
        out += "<|start|>assistant to=functions." + name + "<|channel|>commentary ";
        out += (call.contains("content_type") ? call["content_type"].get<std::string>() : std::string("json")) + "<|message|>";
        out += dumps(call.contains("arguments") ? call["arguments"] : json()) + "<|call|>";
        last_tool_call = name;
        have_tool_call = true;
      } else if (last && !options.add_generation_prompt) {
        if (m.contains("thinking")) out += "<|start|>assistant<|channel|>analysis<|message|>" + thinking + "<|end|>";
        out += "<|start|>assistant<|channel|>final<|message|>" + content + "<|return|>";
      } else {
        out += "<|start|>assistant<|channel|>final<|message|>" + content + "<|end|>";
        have_tool_call = false;
      }
    } else if (role == "tool") {
      NIBBLE_CHECK(have_tool_call, "{}: a tool message without a previous assistant tool call", what);
      out += "<|start|>functions." + last_tool_call + " to=assistant<|channel|>commentary<|message|>" +
             dumps(m.contains("content") ? m["content"] : json()) + "<|end|>";
    } else if (role == "user") {
      out += "<|start|>user<|message|>" + text_of(m, "content", what) + "<|end|>";
    }
  }
  if (options.add_generation_prompt) out += "<|start|>assistant";
  return out;
}

std::vector<Message> parse_completion(std::string_view text) {
  // The generation prompt already opened the first message: "<|start|>assistant" is implied.
  std::vector<Message> out;
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    Message m;
    if (!first) {
      if (!text.substr(pos).starts_with("<|start|>")) {
        NIBBLE_CHECK(text.substr(pos).find_first_not_of(" \n") == std::string_view::npos,
                     "harmony: expected <|start|> at byte {} of the completion", pos);
        break;
      }
      pos += 9;
    }
    const size_t msg = text.find("<|message|>", pos);
    std::string_view header = text.substr(pos, msg == std::string_view::npos ? std::string_view::npos : msg - pos);
    // header: [role][ to=recipient]<|channel|>channel[ to=recipient][ content_type]  (role absent in
    // the first). The model writes the content type of a tool call as "<|constrain|>json" (the
    // published template renders it plain): the token is dropped, the word after it is the type.
    std::string unconstrained;
    std::string constrained_type;
    if (const size_t c = header.find("<|constrain|>"); c != std::string_view::npos) {
      const size_t b = c + 13;
      size_t e = b;
      while (e < header.size() && header[e] != ' ' && header.substr(e, 2) != "<|") ++e;
      constrained_type = std::string(header.substr(b, e - b));
      unconstrained = std::string(header.substr(0, c)) + std::string(header.substr(e));
      while (!unconstrained.empty() && unconstrained.back() == ' ') unconstrained.pop_back();
      header = unconstrained;
    }
    const size_t ch = header.find("<|channel|>");
    std::string_view head = header.substr(0, ch);
    if (first) {
      m.role = "assistant";
    } else {
      const size_t sp = head.find(' ');
      m.role = std::string(head.substr(0, sp));
      head = sp == std::string_view::npos ? std::string_view() : head.substr(sp + 1);
    }
    while (!head.empty() && head.front() == ' ') head.remove_prefix(1);
    if (head.starts_with("to=")) m.recipient = std::string(head.substr(3, head.find(' ') == std::string_view::npos ? std::string_view::npos : head.find(' ') - 3));
    if (ch != std::string_view::npos) {
      std::string_view rest = header.substr(ch + 11);
      const size_t sp = rest.find(' ');
      m.channel = std::string(rest.substr(0, sp));
      if (sp != std::string_view::npos) {
        std::string_view tail = rest.substr(sp + 1);
        if (tail.starts_with("to=")) {  // recipient may also follow the channel
          const size_t e = tail.find(' ');
          m.recipient = std::string(tail.substr(3, e == std::string_view::npos ? std::string_view::npos : e - 3));
          tail = e == std::string_view::npos ? std::string_view() : tail.substr(e + 1);
        }
        m.content_type = std::string(tail);
      }
    }
    if (!constrained_type.empty()) m.content_type = constrained_type;
    if (msg == std::string_view::npos) {  // cut off inside the header
      out.push_back(std::move(m));
      break;
    }
    m.header_done = true;
    pos = msg + 11;
    size_t end = std::string_view::npos;
    std::string end_token;
    for (const char* tok : {"<|end|>", "<|return|>", "<|call|>"}) {
      const size_t e = text.find(tok, pos);
      if (e < end) {
        end = e;
        end_token = tok;
      }
    }
    m.content = std::string(text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
    m.end = end_token;
    out.push_back(std::move(m));
    if (end == std::string_view::npos) break;
    pos = end + end_token.size();
    if (end_token != "<|end|>") break;  // <|return|> / <|call|> end the generation
    first = false;
  }
  return out;
}

std::vector<Message> parse_completion(const Tokenizer& tokenizer, std::span<const int32_t> ids) {
  return parse_completion(tokenizer.decode(ids, false));
}

std::string VisibleText::update(std::string_view completion) {
  // The visible text is rebuilt from the whole completion: messages only ever grow at the end,
  // so it extends what was shown before (a header becomes visible only once it is complete).
  std::string text;
  for (const Message& m : parse_completion(completion)) {
    if (!m.header_done || (m.channel != "final" && !show_reasoning_)) continue;
    if (!text.empty()) text += "\n\n";
    if (show_reasoning_)
      text += "[" + m.channel + (m.recipient.empty() ? "" : " to=" + m.recipient) + "]\n";
    text += m.content;
  }
  size_t common = 0;
  while (common < text.size() && common < shown_.size() && text[common] == shown_[common]) ++common;
  std::string delta = text.substr(common);
  shown_ = std::move(text);
  return delta;
}

std::vector<int32_t> stop_ids(const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  for (const char* t : {"<|return|>", "<|call|>"})
    if (const auto id = tokenizer.piece_to_id(t)) ids.push_back(*id);
  return ids;
}

}  // namespace nibble::harmony
