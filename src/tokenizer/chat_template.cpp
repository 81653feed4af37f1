#include "tokenizer/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>
#include <optional>

#include "base/error.h"
#include "tokenizer/harmony.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace nibble {

using jinja::Args;
using jinja::List;
using jinja::Kwargs;
using jinja::Value;
using json = nlohmann::ordered_json;
using Kind = Value::Kind;

namespace {

// ---------------------------------------------------------------- preprocessing and lexing

// transformers renders with trim_blocks and lstrip_blocks; whitespace control markers (-) strip
// all whitespace on their side. Done on the source text, before lexing (as @huggingface/jinja).
std::string preprocess(std::string_view src) {
  // keep_trailing_newline=False: one trailing newline of the source is dropped.
  if (src.ends_with('\n')) src.remove_suffix(1);
  std::string s;
  // lstrip_blocks: spaces/tabs from the start of a line up to a block or comment tag.
  for (size_t i = 0; i < src.size();) {
    size_t j = i;
    while (j < src.size() && (src[j] == ' ' || src[j] == '\t')) ++j;
    if (j + 1 < src.size() && src[j] == '{' && (src[j + 1] == '%' || src[j + 1] == '#'))
      i = j;
    const size_t nl = src.find('\n', i);
    const size_t end = nl == std::string_view::npos ? src.size() : nl + 1;
    s.append(src.substr(i, end - i));
    i = end;
  }
  // trim_blocks: the first newline after a block or comment tag.
  std::string t;
  for (size_t i = 0; i < s.size(); ++i) {
    t.push_back(s[i]);
    if ((s[i] == '}') && i > 0 && (s[i - 1] == '%' || s[i - 1] == '#') && i + 1 < s.size() && s[i + 1] == '\n') ++i;
  }
  // Whitespace control.
  std::string u;
  const auto is_ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '{' && i + 2 < t.size() && (t[i + 1] == '%' || t[i + 1] == '{' || t[i + 1] == '#') && t[i + 2] == '-') {
      while (!u.empty() && is_ws(u.back())) u.pop_back();
      u.push_back('{');
      u.push_back(t[i + 1]);
      i += 2;
      continue;
    }
    if (t[i] == '-' && i + 2 < t.size() && (t[i + 1] == '%' || t[i + 1] == '}' || t[i + 1] == '#') && t[i + 2] == '}') {
      u.push_back(t[i + 1]);
      u.push_back('}');
      i += 3;
      while (i < t.size() && is_ws(t[i])) ++i;
      --i;
      continue;
    }
    u.push_back(t[i]);
  }
  return u;
}

enum class Tok { kText, kExprOpen, kStmtOpen, kClose, kName, kString, kInt, kFloat, kOp, kEnd };

struct Token {
  Tok type;
  std::string text;
  int line;
};

[[noreturn]] void syntax_error(int line, const std::string& what) {
  NIBBLE_THROW("chat template line {}: {} (supply another template with --chat-template FILE)", line, what);
}

std::vector<Token> lex(const std::string& s) {
  std::vector<Token> out;
  int line = 1;
  size_t i = 0;
  const auto count_lines = [&](size_t from, size_t to) {
    for (size_t k = from; k < to; ++k) line += s[k] == '\n';
  };
  while (i < s.size()) {
    const size_t open = s.find('{', i);
    size_t tag = std::string::npos;
    for (size_t k = open; k != std::string::npos; k = s.find('{', k + 1)) {
      if (k + 1 < s.size() && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')) {
        tag = k;
        break;
      }
    }
    const size_t text_end = tag == std::string::npos ? s.size() : tag;
    if (text_end > i) out.push_back({Tok::kText, s.substr(i, text_end - i), line});
    count_lines(i, text_end);
    if (tag == std::string::npos) break;
    i = tag;
    if (s[i + 1] == '#') {
      const size_t close = s.find("#}", i + 2);
      if (close == std::string::npos) syntax_error(line, "unterminated comment");
      count_lines(i, close + 2);
      i = close + 2;
      continue;
    }
    const bool expr = s[i + 1] == '{';
    out.push_back({expr ? Tok::kExprOpen : Tok::kStmtOpen, "", line});
    i += 2;
    const char* close = expr ? "}}" : "%}";
    // Raw block: {% raw %} ... {% endraw %} is copied verbatim.
    while (true) {
      while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) line += s[i++] == '\n';
      if (i >= s.size()) syntax_error(line, "unterminated tag");
      if (s.compare(i, 2, close) == 0) {
        out.push_back({Tok::kClose, "", line});
        i += 2;
        break;
      }
      const char c = s[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t j = i;
        while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
        out.push_back({Tok::kName, s.substr(i, j - i), line});
        i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t j = i;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        bool is_float = false;
        if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
          is_float = true;
          ++j;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
        out.push_back({is_float ? Tok::kFloat : Tok::kInt, s.substr(i, j - i), line});
        i = j;
      } else if (c == '\'' || c == '"') {
        std::string v;
        size_t j = i + 1;
        for (; j < s.size() && s[j] != c; ++j) {
          if (s[j] == '\n') ++line;
          if (s[j] != '\\' || j + 1 >= s.size()) {
            v.push_back(s[j]);
            continue;
          }
          const char e = s[++j];
          switch (e) {
            case 'n': v.push_back('\n'); break;
            case 't': v.push_back('\t'); break;
            case 'r': v.push_back('\r'); break;
            case 'b': v.push_back('\b'); break;
            case 'f': v.push_back('\f'); break;
            case '0': v.push_back('\0'); break;
            case '\\': case '\'': case '"': v.push_back(e); break;
            case '\n': break;
            default: v.push_back('\\'); v.push_back(e);
          }
        }
        if (j >= s.size()) syntax_error(line, "unterminated string literal");
        out.push_back({Tok::kString, v, line});
        i = j + 1;
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ".", ",", ":",
                                     "|", "~", "+", "-", "*", "/", "%", "<", ">", "=", "!"};
        bool matched = false;
        for (const char* op : kOps) {
          const size_t n = std::char_traits<char>::length(op);
          if (s.compare(i, n, op) == 0) {
            out.push_back({Tok::kOp, op, line});
            i += n;
            matched = true;
            break;
          }
        }
        if (!matched) syntax_error(line, fmt::format("unexpected character {:?}", std::string(1, c)));
      }
    }
  }
  out.push_back({Tok::kEnd, "", line});
  return out;
}

// ---------------------------------------------------------------- syntax tree

struct Expr;
using ExprPtr = std::shared_ptr<Expr>;
struct Expr {
  enum class Type { kLiteral, kName, kAttr, kItem, kSlice, kCall, kFilter, kTest, kUnary, kBinary, kCond, kList, kDict, kTuple };
  Type type;
  int line = 0;
  Value literal;
  std::string name;                 // name, attribute, filter/test name, operator
  std::vector<ExprPtr> children;    // operands, list items, call args; slice: start, stop, step (nullable)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;             // `is not`, `not in`
};

struct Node;
using NodePtr = std::shared_ptr<Node>;
using Body = std::vector<NodePtr>;
struct Node {
  enum class Type { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kCallBlock };
  Type type;
  int line = 0;
  std::string text;                                     // text; set/macro name
  ExprPtr expr;                                         // output, for iterable, set value
  std::vector<std::pair<ExprPtr, Body>> branches;       // if/elif/else (else: null condition)
  std::vector<std::string> targets;                     // for targets; set: {name} or {ns, attr}
  ExprPtr filter;                                       // for ... if filter
  Body body, else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters with defaults
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body parse_template() {
    Body body = parse_body({});
    if (peek().type != Tok::kEnd) syntax_error(peek().line, "unexpected tag");
    return body;
  }

 private:
  const Token& peek(size_t k = 0) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[p_ < t_.size() - 1 ? p_++ : p_]; }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).type == Tok::kOp && peek(k).text == op; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).type == Tok::kName && peek(k).text == n; }
  void expect_op(const char* op) {
    if (!is_op(op)) syntax_error(peek().line, fmt::format("expected '{}' but found {:?}", op, peek().text));
    ++p_;
  }
  void expect_close() {
    if (peek().type != Tok::kClose) syntax_error(peek().line, fmt::format("expected end of tag, found {:?}", peek().text));
    ++p_;
  }
  std::string expect_name() {
    if (peek().type != Tok::kName) syntax_error(peek().line, fmt::format("expected a name, found {:?}", peek().text));
    return next().text;
  }

  // Parses nodes until a {% tag %} whose keyword is in `stops` (left unconsumed, after "{%").
  Body parse_body(const std::vector<std::string>& stops) {
    Body body;
    while (true) {
      const Token& tok = peek();
      if (tok.type == Tok::kEnd) {
        if (!stops.empty()) syntax_error(tok.line, fmt::format("missing {{% {} %}}", stops.back()));
        return body;
      }
      if (tok.type == Tok::kText) {
        auto n = std::make_shared<Node>();
        n->type = Node::Type::kText;
        n->text = next().text;
        body.push_back(n);
        continue;
      }
      if (tok.type == Tok::kExprOpen) {
        next();
        auto n = std::make_shared<Node>();
        n->type = Node::Type::kOutput;
        n->line = tok.line;
        n->expr = parse_expr();
        if (peek().type != Tok::kClose) syntax_error(peek().line, fmt::format("expected '}}}}', found {:?}", peek().text));
        next();
        body.push_back(n);
        continue;
      }
      // {% statement %}
      const std::string& kw = peek(1).text;
      if (std::find(stops.begin(), stops.end(), kw) != stops.end()) {
        next();  // "{%"; the keyword is read by the caller
        return body;
      }
      next();
      body.push_back(parse_statement());
    }
  }

  NodePtr parse_statement() {
    const int line = peek().line;
    const std::string kw = expect_name();
    auto n = std::make_shared<Node>();
    n->line = line;
    if (kw == "if") {
      n->type = Node::Type::kIf;
      ExprPtr cond = parse_expr();
      expect_close();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"});
        n->branches.emplace_back(cond, std::move(b));
        const std::string which = expect_name();
        if (which == "endif") {
          expect_close();
          break;
        }
        if (which == "elif") {
          cond = parse_expr();
          expect_close();
        } else {
          expect_close();
          n->branches.emplace_back(nullptr, parse_body({"endif"}));
          expect_name();
          expect_close();
          break;
        }
      }
    } else if (kw == "for") {
      n->type = Node::Type::kFor;
      n->targets.push_back(expect_name());
      while (is_op(",")) {
        next();
        n->targets.push_back(expect_name());
      }
      if (!is_name("in")) syntax_error(peek().line, "expected 'in' in for loop");
      next();
      n->expr = parse_or_no_cond();
      if (is_name("if")) {
        next();
        n->filter = parse_or_no_cond();
      }
      if (is_name("recursive")) syntax_error(line, "recursive loops are not supported");
      expect_close();
      n->body = parse_body({"else", "endfor"});
      if (expect_name() == "else") {
        expect_close();
        n->else_body = parse_body({"endfor"});
        expect_name();
      }
      expect_close();
    } else if (kw == "set") {
      n->targets.push_back(expect_name());
      if (is_op(".")) {
        next();
        n->targets.push_back(expect_name());
      }
      if (is_op(",")) syntax_error(line, "tuple assignment in set is not supported");
      if (is_op("=")) {
        next();
        n->type = Node::Type::kSet;
        n->expr = parse_expr();
        expect_close();
      } else {
        n->type = Node::Type::kSetBlock;
        expect_close();
        n->body = parse_body({"endset"});
        expect_name();
        expect_close();
      }
    } else if (kw == "macro") {
      n->type = Node::Type::kMacro;
      n->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        std::string param = expect_name();
        ExprPtr def;
        if (is_op("=")) {
          next();
          def = parse_expr();
        }
        n->params.emplace_back(param, def);
        if (is_op(",")) next();
      }
      expect_op(")");
      expect_close();
      n->body = parse_body({"endmacro"});
      expect_name();
      if (peek().type == Tok::kName) next();  // {% endmacro name %}
      expect_close();
    } else if (kw == "break" || kw == "continue") {
      n->type = kw == "break" ? Node::Type::kBreak : Node::Type::kContinue;
      expect_close();
    } else if (kw == "generation") {  // transformers' assistant-mask marker: renders its body
      n->type = Node::Type::kCallBlock;
      expect_close();
      n->body = parse_body({"endgeneration"});
      expect_name();
      expect_close();
    } else {
      syntax_error(line, fmt::format("the statement {{% {} %}} is not supported", kw));
    }
    return n;
  }

  ExprPtr make(Expr::Type type, int line) {
    auto e = std::make_shared<Expr>();
    e->type = type;
    e->line = line;
    return e;
  }

  // expr := or_expr ['if' or_expr ['else' expr]]
  ExprPtr parse_expr() {
    ExprPtr value = parse_or();
    if (is_name("if")) {
      const int line = next().line;
      auto e = make(Expr::Type::kCond, line);
      ExprPtr cond = parse_or();
      ExprPtr otherwise;
      if (is_name("else")) {
        next();
        otherwise = parse_expr();
      }
      e->children = {cond, value, otherwise};
      return e;
    }
    return value;
  }
  ExprPtr parse_or_no_cond() { return parse_or(); }

  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b, int line) {
    auto e = make(Expr::Type::kBinary, line);
    e->name = op;
    e->children = {std::move(a), std::move(b)};
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr a = parse_and();
    while (is_name("or")) {
      const int line = next().line;
      a = binary("or", a, parse_and(), line);
    }
    return a;
  }
  ExprPtr parse_and() {
    ExprPtr a = parse_not();
    while (is_name("and")) {
      const int line = next().line;
      a = binary("and", a, parse_not(), line);
    }
    return a;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      const int line = next().line;
      auto e = make(Expr::Type::kUnary, line);
      e->name = "not";
      e->children = {parse_not()};
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr a = parse_concat();
    while (true) {
      const int line = peek().line;
      if (peek().type == Tok::kOp && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                      peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        const std::string op = next().text;
        a = binary(op, a, parse_concat(), line);
      } else if (is_name("in")) {
        next();
        a = binary("in", a, parse_concat(), line);
      } else if (is_name("not") && is_name("in", 1)) {
        next();
        next();
        a = binary("not in", a, parse_concat(), line);
      } else {
        return a;
      }
    }
  }
  ExprPtr parse_concat() {
    ExprPtr a = parse_math1();
    while (is_op("~")) {
      const int line = next().line;
      a = binary("~", a, parse_math1(), line);
    }
    return a;
  }
  ExprPtr parse_math1() {
    ExprPtr a = parse_math2();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      a = binary(t.text, a, parse_math2(), t.line);
    }
    return a;
  }
  ExprPtr parse_math2() {
    ExprPtr a = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      a = binary(t.text, a, parse_pow(), t.line);
    }
    return a;
  }
  ExprPtr parse_pow() {
    ExprPtr a = parse_unary();
    while (is_op("**")) {
      const int line = next().line;
      a = binary("**", a, parse_unary(), line);
    }
    return a;
  }
  ExprPtr parse_unary() {
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      auto e = make(Expr::Type::kUnary, t.line);
      e->name = t.text;
      e->children = {parse_unary()};
      return e;
    }
    return parse_postfix(parse_primary());
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().type == Tok::kName && is_op("=", 1)) {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(key, parse_expr());
      } else {
        e.children.push_back(parse_expr());
      }
      if (is_op(",")) next();
      else if (!is_op(")")) syntax_error(peek().line, fmt::format("expected ',' or ')' in call, found {:?}", peek().text));
    }
    expect_op(")");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const int line = peek().line;
      if (is_op(".")) {
        next();
        auto a = make(Expr::Type::kAttr, line);
        a->name = expect_name();
        a->children = {e};
        e = a;
      } else if (is_op("[")) {
        next();
        ExprPtr parts[3];
        int part = 0;
        bool slice = false;
        while (!is_op("]")) {
          if (is_op(":")) {
            next();
            slice = true;
            if (++part > 2) syntax_error(line, "too many ':' in a slice");
            continue;
          }
          parts[part] = parse_expr();
        }
        next();
        if (slice) {
          auto s = make(Expr::Type::kSlice, line);
          s->children = {e, parts[0], parts[1], parts[2]};
          e = s;
        } else {
          if (!parts[0]) syntax_error(line, "empty subscript");
          auto s = make(Expr::Type::kItem, line);
          s->children = {e, parts[0]};
          e = s;
        }
      } else if (is_op("(")) {
        auto c = make(Expr::Type::kCall, line);
        c->children.push_back(e);
        parse_call_args(*c);
        e = c;
      } else if (is_op("|")) {
        next();
        auto f = make(Expr::Type::kFilter, line);
        f->name = expect_name();
        f->children.push_back(e);
        if (is_op("(")) parse_call_args(*f);
        e = f;
      } else if (is_name("is")) {
        next();
        auto t = make(Expr::Type::kTest, line);
        if (is_name("not")) {
          next();
          t->negated = true;
        }
        t->name = expect_name();
        t->children.push_back(e);
        if (is_op("(")) {
          parse_call_args(*t);
        } else if (peek().type == Tok::kString || peek().type == Tok::kInt || peek().type == Tok::kFloat ||
                   (peek().type == Tok::kName && !is_name("and") && !is_name("or") && !is_name("else") &&
                    !is_name("if") && !is_name("is") && !is_name("in") && !is_name("not"))) {
          t->children.push_back(parse_primary());  // `is divisibleby 3`, `is sameas none`
        }
        e = t;
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_primary() {
    const Token& t = next();
    switch (t.type) {
      case Tok::kString: {
        auto e = make(Expr::Type::kLiteral, t.line);
        e->literal = Value::string(t.text);
        while (peek().type == Tok::kString) e->literal.s += next().text;  // adjacent literals join
        return e;
      }
      case Tok::kInt: {
        auto e = make(Expr::Type::kLiteral, t.line);
        e->literal = Value::integer(std::stoll(t.text));
        return e;
      }
      case Tok::kFloat: {
        auto e = make(Expr::Type::kLiteral, t.line);
        e->literal = Value::number(std::stod(t.text));
        return e;
      }
      case Tok::kName: {
        auto e = make(Expr::Type::kLiteral, t.line);
        if (t.text == "true" || t.text == "True") e->literal = Value::boolean(true);
        else if (t.text == "false" || t.text == "False") e->literal = Value::boolean(false);
        else if (t.text == "none" || t.text == "None") e->literal = Value::none();
        else {
          e->type = Expr::Type::kName;
          e->name = t.text;
        }
        return e;
      }
      case Tok::kOp:
        if (t.text == "(") {
          ExprPtr first = parse_expr();
          if (is_op(")")) {
            next();
            return first;
          }
          auto tuple = make(Expr::Type::kTuple, t.line);
          tuple->children.push_back(first);
          while (is_op(",")) {
            next();
            if (is_op(")")) break;
            tuple->children.push_back(parse_expr());
          }
          expect_op(")");
          return tuple;
        }
        if (t.text == "[") {
          auto list = make(Expr::Type::kList, t.line);
          while (!is_op("]")) {
            list->children.push_back(parse_expr());
            if (is_op(",")) next();
            else if (!is_op("]")) syntax_error(peek().line, "expected ',' or ']' in a list");
          }
          next();
          return list;
        }
        if (t.text == "{") {
          auto dict = make(Expr::Type::kDict, t.line);
          while (!is_op("}")) {
            ExprPtr key = parse_expr();
            expect_op(":");
            dict->children.push_back(key);
            dict->children.push_back(parse_expr());
            if (is_op(",")) next();
            else if (!is_op("}")) syntax_error(peek().line, "expected ',' or '}' in a dict");
          }
          next();
          return dict;
        }
        break;
      default: break;
    }
    syntax_error(t.line, fmt::format("unexpected {:?} in an expression", t.text.empty() ? "end of tag" : t.text));
  }

  std::vector<Token> t_;
  size_t p_ = 0;
};

// ---------------------------------------------------------------- evaluation

[[noreturn]] void runtime_error(int line, const std::string& what) {
  NIBBLE_THROW("chat template line {}: {}", line, what);
}

struct LoopControl {
  enum { kNone, kBreak, kContinue } state = kNone;
};

std::string to_json_text(const json& j, int indent, int depth);

std::string json_string_literal(const std::string& s) {
  // Python json.dumps(ensure_ascii=False): escapes quotes, backslashes and control characters.
  std::string out = "\"";
  for (const char c : s) {
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

// Python json.dumps layout: ", " and ": " separators, or newlines and `indent` spaces.
std::string to_json_text(const json& j, int indent, int depth) {
  const std::string nl = indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent * (depth + 1)), ' ') : "";
  const std::string close_nl = indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent * depth), ' ') : "";
  const std::string sep = indent >= 0 ? "," : ", ";
  switch (j.type()) {
    case json::value_t::object: {
      if (j.empty()) return "{}";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : j.items()) {
        out += (first ? "" : sep) + nl + json_string_literal(k) + ": " + to_json_text(v, indent, depth + 1);
        first = false;
      }
      return out + close_nl + "}";
    }
    case json::value_t::array: {
      if (j.empty()) return "[]";
      std::string out = "[";
      for (size_t k = 0; k < j.size(); ++k) out += (k ? sep : "") + nl + to_json_text(j[k], indent, depth + 1);
      return out + close_nl + "]";
    }
    case json::value_t::string: return json_string_literal(j.get<std::string>());
    case json::value_t::boolean: return j.get<bool>() ? "true" : "false";
    case json::value_t::null: return "null";
    case json::value_t::number_float: return Value::number(j.get<double>()).str();
    default: return j.dump();
  }
}

std::string py_strip(const std::string& s, const std::optional<std::string>& chars, bool left, bool right) {
  const auto in_set = [&](unsigned char c) {
    return chars ? chars->find(static_cast<char>(c)) != std::string::npos : std::isspace(c) != 0;
  };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && in_set(static_cast<unsigned char>(s[b]))) ++b;
  if (right)
    while (e > b && in_set(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

class Renderer {
 public:
  Renderer() { scopes_.emplace_back(); }

  void set_global(const std::string& name, Value v) { scopes_.front()[name] = std::move(v); }

  void render(const Body& body, std::string& out, LoopControl* loop) {
    for (const auto& n : body) {
      exec(*n, out, loop);
      if (loop && loop->state != LoopControl::kNone) return;
    }
  }

 private:
  using Scope = std::map<std::string, Value>;

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value();
  }

  void exec(const Node& n, std::string& out, LoopControl* loop) {
    switch (n.type) {
      case Node::Type::kText: out += n.text; return;
      case Node::Type::kOutput: out += eval(*n.expr).str(); return;
      case Node::Type::kIf:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || eval(*cond).truthy()) {
            render(body, out, loop);
            return;
          }
        }
        return;
      case Node::Type::kFor: exec_for(n, out); return;
      case Node::Type::kSet: assign(n, eval(*n.expr)); return;
      case Node::Type::kSetBlock: {
        std::string captured;
        render(n.body, captured, loop);
        assign(n, Value::string(captured));
        return;
      }
      case Node::Type::kMacro: define_macro(n); return;
      case Node::Type::kBreak:
      case Node::Type::kContinue:
        if (!loop) runtime_error(n.line, "break/continue outside a loop");
        loop->state = n.type == Node::Type::kBreak ? LoopControl::kBreak : LoopControl::kContinue;
        return;
      case Node::Type::kCallBlock: render(n.body, out, loop); return;
    }
  }

  void assign(const Node& n, Value v) {
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = std::move(v);
      return;
    }
    Value ns = lookup(n.targets[0]);
    if (ns.kind != Kind::kDict || !ns.dict->is_namespace)
      runtime_error(n.line, fmt::format("cannot set attribute {:?} of {} (only of a namespace())", n.targets[1], n.targets[0]));
    ns.dict->set(n.targets[1], std::move(v));
  }

  static std::vector<Value> iterate(const Value& v, int line) {
    switch (v.kind) {
      case Kind::kList: return *v.list;
      case Kind::kDict: {
        std::vector<Value> keys;
        for (const auto& [k, _] : v.dict->items) keys.push_back(Value::string(k));
        return keys;
      }
      case Kind::kString: {
        std::vector<Value> chars;
        for (size_t i = 0; i < v.s.size();) {
          const auto c = static_cast<unsigned char>(v.s[i]);
          const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
          chars.push_back(Value::string(v.s.substr(i, n)));
          i += n;
        }
        return chars;
      }
      case Kind::kUndefined:
      case Kind::kNone: return {};
      default: runtime_error(line, fmt::format("cannot iterate over a {}", v.type_name()));
    }
  }

  void exec_for(const Node& n, std::string& out) {
    std::vector<Value> items = iterate(eval(*n.expr), n.line);
    if (n.filter) {
      std::vector<Value> kept;
      for (auto& item : items) {
        scopes_.emplace_back();
        bind_targets(n, item);
        if (eval(*n.filter).truthy()) kept.push_back(item);
        scopes_.pop_back();
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      render(n.else_body, out, nullptr);
      return;
    }
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < len; ++k) {
      scopes_.emplace_back();
      bind_targets(n, items[k]);
      Value loop = Value::make_dict();
      loop.dict->set("index", Value::integer(k + 1));
      loop.dict->set("index0", Value::integer(k));
      loop.dict->set("revindex", Value::integer(len - k));
      loop.dict->set("revindex0", Value::integer(len - k - 1));
      loop.dict->set("first", Value::boolean(k == 0));
      loop.dict->set("last", Value::boolean(k == len - 1));
      loop.dict->set("length", Value::integer(len));
      loop.dict->set("previtem", k > 0 ? items[k - 1] : Value());
      loop.dict->set("nextitem", k + 1 < len ? items[k + 1] : Value());
      scopes_.back()["loop"] = loop;
      LoopControl control;
      render(n.body, out, &control);
      scopes_.pop_back();
      if (control.state == LoopControl::kBreak) break;
    }
  }

  void bind_targets(const Node& n, const Value& item) {
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = item;
      return;
    }
    if (item.kind != Kind::kList || item.list->size() != n.targets.size())
      runtime_error(n.line, fmt::format("cannot unpack a {} into {} loop variables", item.type_name(), n.targets.size()));
    for (size_t k = 0; k < n.targets.size(); ++k) scopes_.back()[n.targets[k]] = (*item.list)[k];
  }

  void define_macro(const Node& n) {
    const Node* node = &n;
    scopes_.back()[n.text] = Value::function([this, node](Args& args, Kwargs& kwargs) {
      // Macros see the globals and their own parameters (not the caller's locals).
      std::vector<Scope> saved;
      saved.swap(scopes_);
      scopes_.push_back(saved.front());
      scopes_.emplace_back();
      for (size_t k = 0; k < node->params.size(); ++k) {
        const auto& [name, def] = node->params[k];
        Value v;
        if (k < args.size()) v = args[k];
        for (const auto& [kn, kv] : kwargs)
          if (kn == name) v = kv;
        if (v.is_undefined() && def && k >= args.size()) v = eval(*def);
        scopes_.back()[name] = v;
      }
      std::string out;
      render(node->body, out, nullptr);
      saved.front() = scopes_.front();  // a global namespace() may have changed: keep its values
      scopes_.swap(saved);
      return Value::string(out);
    });
  }

  Value eval(const Expr& e) {
    switch (e.type) {
      case Expr::Type::kLiteral: return e.literal;
      case Expr::Type::kName: return lookup_name(e);
      case Expr::Type::kAttr: return get_attr(eval(*e.children[0]), e.name, e.line);
      case Expr::Type::kItem: return get_item(eval(*e.children[0]), eval(*e.children[1]), e.line);
      case Expr::Type::kSlice: return slice(e);
      case Expr::Type::kCall: return call(e);
      case Expr::Type::kFilter: return filter(e);
      case Expr::Type::kTest: return Value::boolean(test(e) != e.negated);
      case Expr::Type::kUnary: {
        const Value v = eval(*e.children[0]);
        if (e.name == "not") return Value::boolean(!v.truthy());
        if (v.kind == Kind::kInt) return Value::integer(e.name == "-" ? -v.i : v.i);
        if (v.kind == Kind::kFloat) return Value::number(e.name == "-" ? -v.f : v.f);
        runtime_error(e.line, fmt::format("unary {} of a {}", e.name, v.type_name()));
      }
      case Expr::Type::kBinary: return binary(e);
      case Expr::Type::kCond: {
        if (eval(*e.children[0]).truthy()) return eval(*e.children[1]);
        return e.children[2] ? eval(*e.children[2]) : Value();
      }
      case Expr::Type::kList:
      case Expr::Type::kTuple: {
        Value v = Value::make_list();
        for (const auto& c : e.children) v.list->push_back(eval(*c));
        return v;
      }
      case Expr::Type::kDict: {
        Value v = Value::make_dict();
        for (size_t k = 0; k + 1 < e.children.size(); k += 2) v.dict->set(eval(*e.children[k]).str(), eval(*e.children[k + 1]));
        return v;
      }
    }
    return Value();
  }

  Value lookup_name(const Expr& e) {
    Value v = lookup(e.name);
    if (!v.is_undefined()) return v;
    if (e.name == "namespace") {
      return Value::function([](Args& args, Kwargs& kwargs) {
        Value ns = Value::make_dict();
        ns.dict->is_namespace = true;
        if (!args.empty() && args[0].kind == Kind::kDict)
          for (const auto& [k, v] : args[0].dict->items) ns.dict->set(k, v);
        for (auto& [k, v] : kwargs) ns.dict->set(k, v);
        return ns;
      });
    }
    if (e.name == "dict") {
      return Value::function([](Args&, Kwargs& kwargs) {
        Value d = Value::make_dict();
        for (auto& [k, v] : kwargs) d.dict->set(k, v);
        return d;
      });
    }
    if (e.name == "range") {
      const int line = e.line;
      return Value::function([line](Args& args, Kwargs&) {
        int64_t start = 0, stop = 0, step = 1;
        for (const auto& a : args)
          if (a.kind != Kind::kInt) runtime_error(line, "range() takes integers");
        if (args.size() == 1) stop = args[0].i;
        else if (args.size() >= 2) {
          start = args[0].i;
          stop = args[1].i;
          if (args.size() == 3) step = args[2].i;
        }
        if (step == 0) runtime_error(line, "range() step must not be zero");
        Value v = Value::make_list();
        for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) v.list->push_back(Value::integer(k));
        return v;
      });
    }
    if (e.name == "raise_exception") {
      return Value::function([](Args& args, Kwargs&) -> Value {
        NIBBLE_THROW("chat template raised an error: {}", args.empty() ? "" : args[0].str());
      });
    }
    if (e.name == "strftime_now") {
      return Value::function([](Args& args, Kwargs&) {
        const std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[128];
        const std::string f = args.empty() ? "%Y-%m-%d" : args[0].str();
        const size_t n = std::strftime(buf, sizeof(buf), f.c_str(), &tm);
        return Value::string(std::string(buf, n));
      });
    }
    return Value();  // undefined
  }

  static Value bound(std::function<Value(Args&, Kwargs&)> f) { return Value::function(std::move(f)); }

  Value get_attr(const Value& obj, const std::string& name, int line) {
    if (obj.kind == Kind::kDict) {
      if (const Value* v = obj.dict->find(name)) return *v;
      const auto d = obj.dict;
      if (name == "items")
        return bound([d](Args&, Kwargs&) {
          Value out = Value::make_list();
          for (const auto& [k, v] : d->items) out.list->push_back(Value::make_list({Value::string(k), v}));
          return out;
        });
      if (name == "keys")
        return bound([d](Args&, Kwargs&) {
          Value out = Value::make_list();
          for (const auto& [k, _] : d->items) out.list->push_back(Value::string(k));
          return out;
        });
      if (name == "values")
        return bound([d](Args&, Kwargs&) {
          Value out = Value::make_list();
          for (const auto& [_, v] : d->items) out.list->push_back(v);
          return out;
        });
      if (name == "get")
        return bound([d](Args& a, Kwargs&) {
          if (a.empty()) return Value::none();
          const Value* v = d->find(a[0].str());
          return v ? *v : (a.size() > 1 ? a[1] : Value::none());
        });
      return Value();
    }
    if (obj.kind == Kind::kString) return string_method(obj.s, name, line);
    if (obj.kind == Kind::kList) {
      const auto l = obj.list;
      if (name == "append")
        return bound([l](Args& a, Kwargs&) {
          for (auto& v : a) l->push_back(v);
          return Value::none();
        });
      return Value();
    }
    return Value();
  }

  Value string_method(const std::string& s, const std::string& name, int line) {
    if (name == "startswith" || name == "endswith") {
      const bool start = name == "startswith";
      return bound([s, start](Args& a, Kwargs&) {
        std::vector<std::string> options;
        if (!a.empty() && a[0].kind == Kind::kList)
          for (const auto& v : *a[0].list) options.push_back(v.str());
        else if (!a.empty())
          options.push_back(a[0].str());
        for (const auto& o : options)
          if (start ? s.starts_with(o) : s.ends_with(o)) return Value::boolean(true);
        return Value::boolean(false);
      });
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool left = name != "rstrip", right = name != "lstrip";
      return bound([s, left, right](Args& a, Kwargs&) {
        std::optional<std::string> chars;
        if (!a.empty() && !a[0].is_none()) chars = a[0].str();
        return Value::string(py_strip(s, chars, left, right));
      });
    }
    if (name == "split") {
      return bound([s](Args& a, Kwargs&) {
        Value out = Value::make_list();
        const int64_t maxsplit = a.size() > 1 && a[1].kind == Kind::kInt ? a[1].i : -1;
        if (a.empty() || a[0].is_none()) {  // whitespace split
          size_t i = 0;
          int64_t splits = 0;
          while (i < s.size()) {
            while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
            if (i >= s.size()) break;
            if (maxsplit >= 0 && splits == maxsplit) {
              out.list->push_back(Value::string(py_strip(s.substr(i), std::nullopt, false, true)));
              break;
            }
            size_t j = i;
            while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
            out.list->push_back(Value::string(s.substr(i, j - i)));
            ++splits;
            i = j;
          }
          return out;
        }
        const std::string sep = a[0].str();
        if (sep.empty()) NIBBLE_THROW("chat template: split() with an empty separator");
        size_t start = 0;
        int64_t splits = 0;
        for (size_t pos = s.find(sep); pos != std::string::npos && (maxsplit < 0 || splits < maxsplit);
             pos = s.find(sep, start), ++splits) {
          out.list->push_back(Value::string(s.substr(start, pos - start)));
          start = pos + sep.size();
        }
        out.list->push_back(Value::string(s.substr(start)));
        return out;
      });
    }
    if (name == "upper" || name == "lower") {
      const bool up = name == "upper";
      return bound([s, up](Args&, Kwargs&) {
        std::string r = s;
        for (char& c : r) c = static_cast<char>(up ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        return Value::string(r);
      });
    }
    if (name == "replace") {
      return bound([s](Args& a, Kwargs&) {
        if (a.size() < 2) NIBBLE_THROW("chat template: replace() needs two arguments");
        return Value::string(replace_all(s, a[0].str(), a[1].str()));
      });
    }
    if (name == "title" || name == "capitalize") {
      const bool title = name == "title";
      return bound([s, title](Args&, Kwargs&) { return Value::string(title ? title_case(s) : capitalize(s)); });
    }
    if (name == "format") runtime_error(line, "str.format() is not supported");
    return Value();
  }

  static std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    std::string out;
    size_t last = 0;
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, last)) {
      out.append(s, last, pos - last);
      out += to;
      last = pos + from.size();
    }
    return out + s.substr(last);
  }
  static std::string capitalize(const std::string& s) {
    std::string r = s;
    for (size_t k = 0; k < r.size(); ++k)
      r[k] = static_cast<char>(k == 0 ? std::toupper(static_cast<unsigned char>(r[k])) : std::tolower(static_cast<unsigned char>(r[k])));
    return r;
  }
  static std::string title_case(const std::string& s) {
    std::string r = s;
    bool start = true;
    for (char& c : r) {
      const auto u = static_cast<unsigned char>(c);
      c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
      start = !std::isalpha(u);
    }
    return r;
  }

  static int64_t normalize_index(int64_t i, int64_t n) { return i < 0 ? i + n : i; }

  // Python indexes strings by code point.
  static std::vector<std::string> code_points(const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      const size_t n = std::min(s.size() - i, size_t{c < 0x80 ? 1u : c < 0xE0 ? 2u : c < 0xF0 ? 3u : 4u});
      out.push_back(s.substr(i, n));
      i += n;
    }
    return out;
  }

  Value get_item(const Value& obj, const Value& key, int line) {
    if (obj.kind == Kind::kDict) {
      if (const Value* v = obj.dict->find(key.str())) return *v;
      return get_attr(obj, key.str(), line);
    }
    if (obj.kind == Kind::kList || obj.kind == Kind::kString) {
      if (key.kind != Kind::kInt) {
        if (obj.kind == Kind::kString && key.is_string()) return string_method(obj.s, key.s, line);
        runtime_error(line, fmt::format("a {} index must be an integer, not a {}", obj.type_name(), key.type_name()));
      }
      const std::vector<std::string> chars = obj.kind == Kind::kString ? code_points(obj.s) : std::vector<std::string>();
      const int64_t n = obj.kind == Kind::kList ? static_cast<int64_t>(obj.list->size()) : static_cast<int64_t>(chars.size());
      const int64_t i = normalize_index(key.i, n);
      if (i < 0 || i >= n) return Value();  // undefined, like Jinja
      return obj.kind == Kind::kList ? (*obj.list)[static_cast<size_t>(i)] : Value::string(chars[static_cast<size_t>(i)]);
    }
    return Value();
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.children[0]);
    const auto part = [&](int k) -> std::optional<int64_t> {
      if (!e.children[k]) return std::nullopt;
      const Value v = eval(*e.children[k]);
      if (v.is_none()) return std::nullopt;
      if (v.kind != Kind::kInt) runtime_error(e.line, "slice bounds must be integers");
      return v.i;
    };
    const int64_t step = part(3).value_or(1);
    if (step == 0) runtime_error(e.line, "slice step must not be zero");
    int64_t n;
    const std::vector<std::string> chars = obj.kind == Kind::kString ? code_points(obj.s) : std::vector<std::string>();
    if (obj.kind == Kind::kList) n = static_cast<int64_t>(obj.list->size());
    else if (obj.kind == Kind::kString) n = static_cast<int64_t>(chars.size());
    else runtime_error(e.line, fmt::format("cannot slice a {}", obj.type_name()));
    // Python's slice.indices().
    const auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t start = clamp(part(1), step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(part(2), step > 0 ? n : -1);
    if (obj.kind == Kind::kList) {
      Value out = Value::make_list();
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) out.list->push_back((*obj.list)[static_cast<size_t>(k)]);
      return out;
    }
    std::string out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) out += chars[static_cast<size_t>(k)];
    return Value::string(out);
  }

  void eval_args(const Expr& e, size_t first, Args& args, Kwargs& kwargs) {
    for (size_t k = first; k < e.children.size(); ++k) args.push_back(eval(*e.children[k]));
    for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, eval(*v));
  }

  Value call(const Expr& e) {
    const Value f = eval(*e.children[0]);
    if (f.kind != Kind::kFunction) {
      std::string what = e.children[0]->type == Expr::Type::kName || e.children[0]->type == Expr::Type::kAttr ? e.children[0]->name : "expression";
      runtime_error(e.line, fmt::format("{:?} is not a function this interpreter knows", what));
    }
    Args args;
    Kwargs kwargs;
    eval_args(e, 1, args, kwargs);
    return (*f.fn)(args, kwargs);
  }

  static const Value* kwarg(const Kwargs& kw, const char* name) {
    for (const auto& [k, v] : kw)
      if (k == name) return &v;
    return nullptr;
  }

  Value filter(const Expr& e) {
    Value v = eval(*e.children[0]);
    Args args;
    Kwargs kwargs;
    eval_args(e, 1, args, kwargs);
    const std::string& f = e.name;
    if (f == "trim") return Value::string(py_strip(v.str(), args.empty() ? std::nullopt : std::optional<std::string>(args[0].str()), true, true));
    if (f == "length" || f == "count") {
      if (v.kind == Kind::kList) return Value::integer(static_cast<int64_t>(v.list->size()));
      if (v.kind == Kind::kDict) return Value::integer(static_cast<int64_t>(v.dict->items.size()));
      if (v.kind == Kind::kString) {
        int64_t n = 0;
        for (const char c : v.s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        return Value::integer(n);
      }
      if (v.is_undefined()) return Value::integer(0);
      runtime_error(e.line, fmt::format("length of a {}", v.type_name()));
    }
    if (f == "tojson") {
      int indent = -1;
      const Value* ind = kwarg(kwargs, "indent");
      if (!ind && !args.empty()) ind = &args[0];
      if (ind && ind->kind == Kind::kInt) indent = static_cast<int>(ind->i);
      return Value::string(to_json_text(v.to_json(), indent, 0));
    }
    if (f == "join") {
      const std::string sep = args.empty() ? "" : args[0].str();
      const Value* attr = kwarg(kwargs, "attribute");
      std::string out;
      const std::vector<Value> items = iterate(v, e.line);
      for (size_t k = 0; k < items.size(); ++k) {
        out += k ? sep : "";
        out += attr ? get_attr(items[k], attr->str(), e.line).str() : items[k].str();
      }
      return Value::string(out);
    }
    if (f == "upper" || f == "lower" || f == "title" || f == "capitalize") {
      Args a;
      Kwargs k;
      return (*string_method(v.str(), f, e.line).fn)(a, k);
    }
    if (f == "replace") {
      if (args.size() < 2) runtime_error(e.line, "replace needs two arguments");
      return Value::string(replace_all(v.str(), args[0].str(), args[1].str()));
    }
    if (f == "default" || f == "d") {
      const bool boolean = (args.size() > 1 && args[1].truthy()) || (kwarg(kwargs, "boolean") && kwarg(kwargs, "boolean")->truthy());
      if (v.is_undefined() || (boolean && !v.truthy())) return args.empty() ? Value::string("") : args[0];
      return v;
    }
    if (f == "first" || f == "last") {
      const std::vector<Value> items = iterate(v, e.line);
      if (items.empty()) return Value();
      return f == "first" ? items.front() : items.back();
    }
    if (f == "list") return Value::make_list(iterate(v, e.line));
    if (f == "string") return Value::string(v.str());
    if (f == "safe" || f == "e" || f == "escape") return v;  // autoescape is off in chat templates
    if (f == "int") {
      if (v.kind == Kind::kInt) return v;
      if (v.kind == Kind::kFloat) return Value::integer(static_cast<int64_t>(v.f));
      try {
        return Value::integer(std::stoll(v.str()));
      } catch (...) {
        return Value::integer(0);
      }
    }
    if (f == "float") {
      if (v.is_number()) return Value::number(v.as_double());
      try {
        return Value::number(std::stod(v.str()));
      } catch (...) {
        return Value::number(0);
      }
    }
    if (f == "abs") return v.kind == Kind::kInt ? Value::integer(std::llabs(v.i)) : Value::number(std::fabs(v.as_double()));
    if (f == "round") return Value::number(std::round(v.as_double()));
    if (f == "items") {
      if (v.kind != Kind::kDict) runtime_error(e.line, "items of a non-dict");
      Args a;
      Kwargs k;
      return (*get_attr(v, "items", e.line).fn)(a, k);
    }
    if (f == "reverse") {
      if (v.kind == Kind::kString) return Value::string(std::string(v.s.rbegin(), v.s.rend()));
      std::vector<Value> items = iterate(v, e.line);
      std::reverse(items.begin(), items.end());
      return Value::make_list(std::move(items));
    }
    if (f == "unique") {
      Value out = Value::make_list();
      for (const auto& item : iterate(v, e.line)) {
        bool seen = false;
        for (const auto& o : *out.list) seen = seen || equal(o, item);
        if (!seen) out.list->push_back(item);
      }
      return out;
    }
    if (f == "map" || f == "selectattr" || f == "rejectattr") return map_select(e, f, v, args, kwargs);
    if (f == "indent") {
      const int64_t width = args.empty() ? 4 : args[0].i;
      const std::string pad(static_cast<size_t>(std::max<int64_t>(width, 0)), ' ');
      const bool first = (args.size() > 1 && args[1].truthy()) || (kwarg(kwargs, "first") && kwarg(kwargs, "first")->truthy());
      std::string s = v.str(), out = first ? pad : "";
      for (size_t k = 0; k < s.size(); ++k) {
        out.push_back(s[k]);
        if (s[k] == '\n' && k + 1 < s.size() && s[k + 1] != '\n') out += pad;
      }
      return Value::string(out);
    }
    runtime_error(e.line, fmt::format("the filter {:?} is not supported", f));
  }

  Value map_select(const Expr& e, const std::string& f, const Value& v, Args& args, Kwargs& kwargs) {
    Value out = Value::make_list();
    const std::vector<Value> items = iterate(v, e.line);
    if (f == "map") {
      const Value* attr = kwarg(kwargs, "attribute");
      if (!attr) runtime_error(e.line, "map() is supported with attribute= only");
      for (const auto& item : items) out.list->push_back(get_attr(item, attr->str(), e.line));
      return out;
    }
    if (args.empty()) runtime_error(e.line, fmt::format("{} needs an attribute name", f));
    const std::string attr = args[0].str();
    for (const auto& item : items) {
      const Value a = get_attr(item, attr, e.line);
      bool ok;
      if (args.size() == 1) {
        ok = a.truthy();
      } else {
        Expr probe;
        probe.name = args[1].str();
        ok = run_test(probe.name, a, Args(args.begin() + 2, args.end()), e.line);
      }
      if (ok == (f == "selectattr")) out.list->push_back(item);
    }
    return out;
  }

  bool test(const Expr& e) {
    const Value v = eval(*e.children[0]);
    Args args;
    Kwargs kwargs;
    eval_args(e, 1, args, kwargs);
    return run_test(e.name, v, args, e.line);
  }

  bool run_test(const std::string& t, const Value& v, const Args& args, int line) {
    if (t == "defined") return !v.is_undefined();
    if (t == "undefined") return v.is_undefined();
    if (t == "none") return v.is_none();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number();
    if (t == "integer") return v.kind == Kind::kInt;
    if (t == "float") return v.kind == Kind::kFloat;
    if (t == "boolean") return v.kind == Kind::kBool;
    if (t == "true") return v.kind == Kind::kBool && v.b;
    if (t == "false") return v.kind == Kind::kBool && !v.b;
    if (t == "mapping") return v.kind == Kind::kDict;
    if (t == "sequence") return v.kind == Kind::kList || v.is_string() || v.kind == Kind::kDict;
    if (t == "iterable") return v.kind == Kind::kList || v.is_string() || v.kind == Kind::kDict;
    if (t == "callable") return v.kind == Kind::kFunction;
    if (t == "odd" || t == "even") {
      if (v.kind != Kind::kInt) runtime_error(line, fmt::format("'{}' test of a {}", t, v.type_name()));
      return (v.i % 2 != 0) == (t == "odd");
    }
    if (t == "divisibleby") return !args.empty() && args[0].kind == Kind::kInt && args[0].i != 0 && v.kind == Kind::kInt && v.i % args[0].i == 0;
    if (t == "eq" || t == "equalto" || t == "==") return !args.empty() && equal(v, args[0]);
    if (t == "ne" || t == "!=") return args.empty() || !equal(v, args[0]);
    if (t == "sameas") return !args.empty() && ((v.is_none() && args[0].is_none()) || equal(v, args[0]));
    if (t == "in") return !args.empty() && contains(args[0], v, line);
    if (t == "lower" || t == "upper") {
      const std::string s = v.str();
      return std::all_of(s.begin(), s.end(), [&](char c) {
        return !std::isalpha(static_cast<unsigned char>(c)) || (t == "lower" ? std::islower(static_cast<unsigned char>(c)) : std::isupper(static_cast<unsigned char>(c)));
      });
    }
    runtime_error(line, fmt::format("the test {:?} is not supported", t));
  }

  bool contains(const Value& container, const Value& item, int line) {
    switch (container.kind) {
      case Kind::kString: return container.s.find(item.str()) != std::string::npos;
      case Kind::kList:
        for (const auto& v : *container.list)
          if (equal(v, item)) return true;
        return false;
      case Kind::kDict: return container.dict->find(item.str()) != nullptr;
      case Kind::kUndefined:
      case Kind::kNone: return false;
      default: runtime_error(line, fmt::format("'in' on a {}", container.type_name()));
    }
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.children[0]);
      return a.truthy() ? eval(*e.children[1]) : a;
    }
    if (op == "or") {
      Value a = eval(*e.children[0]);
      return a.truthy() ? a : eval(*e.children[1]);
    }
    const Value a = eval(*e.children[0]);
    const Value b = eval(*e.children[1]);
    if (op == "==") return Value::boolean(equal(a, b));
    if (op == "!=") return Value::boolean(!equal(a, b));
    if (op == "in") return Value::boolean(contains(b, a, e.line));
    if (op == "not in") return Value::boolean(!contains(b, a, e.line));
    if (op == "~") return Value::string(a.str() + b.str());
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp;
      if (a.is_number() && b.is_number()) cmp = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double() ? 1 : 0;
      else if (a.is_string() && b.is_string()) cmp = a.s.compare(b.s);
      else runtime_error(e.line, fmt::format("cannot compare a {} with a {}", a.type_name(), b.type_name()));
      if (op == "<") return Value::boolean(cmp < 0);
      if (op == ">") return Value::boolean(cmp > 0);
      if (op == "<=") return Value::boolean(cmp <= 0);
      return Value::boolean(cmp >= 0);
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value::string(a.s + b.s);
      if (a.kind == Kind::kList && b.kind == Kind::kList) {
        List l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::make_list(std::move(l));
      }
    }
    if (a.is_number() && b.is_number()) {
      const bool ints = a.kind == Kind::kInt && b.kind == Kind::kInt;
      if (op == "+") return ints ? Value::integer(a.i + b.i) : Value::number(a.as_double() + b.as_double());
      if (op == "-") return ints ? Value::integer(a.i - b.i) : Value::number(a.as_double() - b.as_double());
      if (op == "*") return ints ? Value::integer(a.i * b.i) : Value::number(a.as_double() * b.as_double());
      if (op == "/") {
        if (b.as_double() == 0) runtime_error(e.line, "division by zero");
        return Value::number(a.as_double() / b.as_double());
      }
      if (op == "//" || op == "%") {
        if (b.as_double() == 0) runtime_error(e.line, "division by zero");
        if (ints) {
          int64_t q = a.i / b.i;
          if ((a.i % b.i != 0) && ((a.i < 0) != (b.i < 0))) --q;  // Python floors
          return op == "//" ? Value::integer(q) : Value::integer(a.i - q * b.i);
        }
        const double q = std::floor(a.as_double() / b.as_double());
        return op == "//" ? Value::number(q) : Value::number(a.as_double() - q * b.as_double());
      }
      if (op == "**") return ints && b.i >= 0 ? Value::integer(static_cast<int64_t>(std::pow(a.i, b.i))) : Value::number(std::pow(a.as_double(), b.as_double()));
    }
    if (op == "*" && a.is_string() && b.kind == Kind::kInt) {
      std::string out;
      for (int64_t k = 0; k < b.i; ++k) out += a.s;
      return Value::string(out);
    }
    runtime_error(e.line, fmt::format("unsupported operation: {} {} {}", a.type_name(), op, b.type_name()));
  }

  std::vector<Scope> scopes_;
};

}  // namespace

struct ChatTemplate::Impl {
  Body body;
};

ChatTemplate::ChatTemplate(std::string_view source) : impl_(std::make_unique<Impl>()) {
  Parser parser(lex(preprocess(source)));
  impl_->body = parser.parse_template();
}

namespace {
bool expr_reads(const ExprPtr& e, std::string_view name) {
  if (!e) return false;
  if (e->type == Expr::Type::kName && e->name == name) return true;
  for (const auto& c : e->children)
    if (expr_reads(c, name)) return true;
  for (const auto& [key, value] : e->kwargs)
    if (expr_reads(value, name)) return true;
  return false;
}

bool body_reads(const Body& body, std::string_view name) {
  for (const NodePtr& n : body) {
    if (expr_reads(n->expr, name) || expr_reads(n->filter, name) || body_reads(n->body, name) ||
        body_reads(n->else_body, name))
      return true;
    for (const auto& [condition, branch] : n->branches)
      if (expr_reads(condition, name) || body_reads(branch, name)) return true;
    for (const auto& [param, default_value] : n->params)
      if (expr_reads(default_value, name)) return true;
  }
  return false;
}
}  // namespace

bool ChatTemplate::reads(std::string_view name) const { return body_reads(impl_->body, name); }

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const json& context) const {
  Renderer r;
  if (context.is_object())
    for (const auto& [k, v] : context.items()) r.set_global(k, Value::from_json(v));
  std::string out;
  r.render(impl_->body, out, nullptr);
  return out;
}

bool chat_format_reads(const Tokenizer& tokenizer, const ChatOptions& options, std::string_view name) {
  const std::string& source = options.template_override.empty() ? tokenizer.chat_template() : options.template_override;
  if (source.empty())
    return harmony::is_harmony_tokenizer(tokenizer) &&
           (name == "reasoning_effort" || name == "model_identity" || name == "current_date" || name == "builtin_tools");
  return ChatTemplate(source).reads(name);
}

std::string apply_chat_template(const Tokenizer& tokenizer, const json& messages, const ChatOptions& options) {
  NIBBLE_CHECK(messages.is_array(), "chat messages must be a list of {{\"role\", \"content\"}} objects");
  std::string source = options.template_override.empty() ? tokenizer.chat_template() : options.template_override;
  if (source.empty()) {
    if (harmony::is_harmony_tokenizer(tokenizer)) {
      harmony::RenderOptions h;
      h.add_generation_prompt = options.add_generation_prompt;
      h.tools = options.tools;
      if (options.extra.contains("reasoning_effort")) h.reasoning_effort = options.extra["reasoning_effort"].get<std::string>();
      if (options.extra.contains("model_identity")) h.model_identity = options.extra["model_identity"].get<std::string>();
      if (options.extra.contains("current_date")) h.current_date = options.extra["current_date"].get<std::string>();
      if (options.extra.contains("builtin_tools"))
        for (const auto& t : options.extra["builtin_tools"]) h.builtin_tools.push_back(t.get<std::string>());
      return harmony::render_conversation(messages, h);
    }
    NIBBLE_THROW("the tokenizer has no chat template (tokenizer_config.json has no chat_template) and is not a "
                 "harmony (gpt-oss) tokenizer: supply one with --chat-template FILE");
  }
  json context = json::object();
  context["messages"] = messages;
  context["add_generation_prompt"] = options.add_generation_prompt;
  context["tools"] = options.tools;
  if (!tokenizer.bos_token().empty()) context["bos_token"] = tokenizer.bos_token();
  if (!tokenizer.eos_token().empty()) context["eos_token"] = tokenizer.eos_token();
  for (const auto& [k, v] : options.extra.items()) context[k] = v;
  return ChatTemplate(source).render(context);
}

}  // namespace nibble
