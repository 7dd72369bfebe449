// JSON-schema-constrained decoding (include/epwa/json_constraint.hpp): the schema compiled into
// nodes, a byte-level pushdown matcher over them, and the per-step token mask.
#include "epwa/json_constraint.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <limits>
#include <map>

#include "epwa/error.hpp"

namespace epwa {

namespace {
// The JSON types a value's first byte decides.
enum Kind : int { kObject, kArray, kString, kNumber, kBool, kNull, kKinds };
constexpr int kMaxDepth = 48;       // nesting of the text being matched
constexpr int kMaxWhitespace = 12;  // consecutive whitespace bytes (no endless blank runs)
constexpr int kMaxNumber = 32;      // bytes of one number
constexpr size_t kMaxChoices = 64;  // properties of an object, values of an enum (bit masks)

bool is_ws(unsigned char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

// Of the strings `cands` (a bit per index of `s`) matched up to `pos`: those whose next byte is c,
// and those that end at `pos`.
uint64_t continuing(uint64_t cands, const std::vector<std::string>& s, int32_t pos,
                    unsigned char c) {
  uint64_t out = 0;
  for (uint64_t m = cands; m; m &= m - 1) {
    const int i = std::countr_zero(m);
    if (static_cast<size_t>(pos) < s[i].size() && static_cast<unsigned char>(s[i][pos]) == c)
      out |= uint64_t{1} << i;
  }
  return out;
}
uint64_t ending(uint64_t cands, const std::vector<std::string>& s, int32_t pos) {
  uint64_t out = 0;
  for (uint64_t m = cands; m; m &= m - 1) {
    const int i = std::countr_zero(m);
    if (s[i].size() == static_cast<size_t>(pos)) out |= uint64_t{1} << i;
  }
  return out;
}
}  // namespace

struct JsonSchema::Node {
  // Per JSON kind, the node a value of that kind follows (null: the kind is not allowed); a node
  // of one schema points to itself, an anyOf to its alternatives.
  std::array<const Node*, kKinds> branch{};
  bool integer = false;               // numbers: integers only
  std::vector<std::string> literals;  // enum / const: the values' compact JSON texts
  std::vector<std::string> names;     // object properties, in schema order
  std::vector<const Node*> props;
  uint64_t required = 0;
  const Node* additional = nullptr;  // other keys' schema; null: no other keys
  const Node* items = nullptr;       // array items (never null once compiled)
  int64_t min_items = 0, max_items = std::numeric_limits<int64_t>::max();
};

// Builds the nodes of one schema document ($ref resolved against it, each pointer compiled once,
// so recursive schemas are finite).
struct SchemaCompiler {
  JsonSchema& out;
  const nlohmann::json& doc;
  std::map<std::string, JsonSchema::Node*> by_ref;
  JsonSchema::Node* any = nullptr;

  JsonSchema::Node* make() {
    out.nodes_.push_back(std::make_unique<JsonSchema::Node>());
    return out.nodes_.back().get();
  }
  // Any JSON value.
  JsonSchema::Node* any_node() {
    if (any) return any;
    any = make();
    any->branch.fill(any);
    any->additional = any;
    any->items = any;
    return any;
  }

  JsonSchema::Node* compile(const nlohmann::json& s, int depth) {
    if (depth > 64) throw Error("response schema: nested too deeply (more than 64 levels)");
    if (s.is_boolean()) {
      if (!s.get<bool>()) throw Error("response schema: `false` accepts no value");
      return any_node();
    }
    if (!s.is_object()) throw Error("response schema: a schema must be an object or a boolean");
    if (s.contains("$ref")) return ref(s["$ref"], depth);
    for (const char* key : {"anyOf", "oneOf"})
      if (s.contains(key)) return alternatives(s[key], key, depth);
    for (const char* key : {"allOf", "not", "if", "patternProperties", "prefixItems"})
      if (s.contains(key))
        throw Error(std::string("response schema: `") + key + "` is not supported");
    JsonSchema::Node* n = make();
    fill(*n, s, depth);
    return n;
  }

  JsonSchema::Node* ref(const nlohmann::json& r, int depth) {
    if (!r.is_string() || r.get<std::string>().rfind("#", 0) != 0)
      throw Error("response schema: only local `$ref`s (\"#/...\") are supported");
    const std::string p = r.get<std::string>();
    if (auto it = by_ref.find(p); it != by_ref.end()) return it->second;
    const nlohmann::json* target = &doc;
    if (p != "#") {
      const nlohmann::json::json_pointer ptr(p.substr(1));
      if (!doc.contains(ptr)) throw Error("response schema: `$ref` " + p + " points nowhere");
      target = &doc.at(ptr);
    }
    // The node exists before its parts are compiled, so a reference back to it ends there.
    JsonSchema::Node* n = make();
    by_ref[p] = n;
    const JsonSchema::Node* c = compile(*target, depth + 1);
    *n = *c;
    for (auto& b : n->branch)
      if (b == c) b = n;
    return n;
  }

  JsonSchema::Node* alternatives(const nlohmann::json& alts, const char* key, int depth) {
    if (!alts.is_array() || alts.empty())
      throw Error(std::string("response schema: `") + key + "` needs a list of schemas");
    JsonSchema::Node* n = make();
    for (const auto& a : alts) {
      const JsonSchema::Node* c = compile(a, depth + 1);
      if (!c->literals.empty())
        throw Error(std::string("response schema: `") + key + "` of `enum`s is not supported");
      for (int k = 0; k < kKinds; ++k)
        if (c->branch[k]) {
          if (n->branch[k])
            throw Error(std::string("response schema: `") + key +
                        "` alternatives of the same JSON type are not supported");
          n->branch[k] = c->branch[k];
        }
    }
    return n;
  }

  static void check_name(const std::string& s, const char* what) {
    for (unsigned char c : s)
      if (c == '"' || c == '\\' || c < 0x20)
        throw Error(std::string("response schema: ") + what + " \"" + s +
                    "\" holds a character that JSON escapes (not supported)");
  }

  void fill(JsonSchema::Node& n, const nlohmann::json& s, int depth) {
    if (s.contains("enum") || s.contains("const")) {
      const nlohmann::json values =
          s.contains("const") ? nlohmann::json::array({s["const"]}) : s["enum"];
      if (!values.is_array() || values.empty() || values.size() > kMaxChoices)
        throw Error("response schema: `enum` needs 1 to 64 values");
      for (const auto& v : values) {
        if (v.is_object() || v.is_array())
          throw Error("response schema: `enum` values must be strings, numbers, booleans or null");
        if (v.is_string()) check_name(v.get<std::string>(), "enum value");
        n.literals.push_back(v.dump());
      }
      return;
    }
    std::vector<std::string> types;
    if (!s.contains("type")) {
      types = {"object", "array", "string", "number", "boolean", "null"};
    } else if (s["type"].is_string()) {
      types = {s["type"].get<std::string>()};
    } else if (s["type"].is_array()) {
      for (const auto& t : s["type"]) {
        if (!t.is_string()) throw Error("response schema: `type` lists names");
        types.push_back(t.get<std::string>());
      }
    } else {
      throw Error("response schema: `type` must be a name or a list of names");
    }
    for (const std::string& t : types) {
      if (t == "object") {
        n.branch[kObject] = &n;
      } else if (t == "array") {
        n.branch[kArray] = &n;
      } else if (t == "string") {
        n.branch[kString] = &n;
      } else if (t == "number") {
        n.branch[kNumber] = &n;
        n.integer = false;
      } else if (t == "integer") {
        if (!n.branch[kNumber]) n.integer = true;
        n.branch[kNumber] = &n;
      } else if (t == "boolean") {
        n.branch[kBool] = &n;
      } else if (t == "null") {
        n.branch[kNull] = &n;
      } else {
        throw Error("response schema: unknown type \"" + t + "\"");
      }
    }
    if (n.branch[kObject]) {
      const bool has_props = s.contains("properties");
      if (has_props) {
        if (!s["properties"].is_object() || s["properties"].size() > kMaxChoices)
          throw Error("response schema: `properties` must be an object of at most 64 schemas");
        for (const auto& [name, sub] : s["properties"].items()) {
          check_name(name, "property");
          n.names.push_back(name);
          n.props.push_back(compile(sub, depth + 1));
        }
      }
      if (s.contains("required")) {
        if (!s["required"].is_array()) throw Error("response schema: `required` lists names");
        for (const auto& r : s["required"]) {
          const auto at = std::find(n.names.begin(), n.names.end(), r.get<std::string>());
          if (at == n.names.end())
            throw Error("response schema: required property \"" + r.get<std::string>() +
                        "\" is not among `properties`");
          n.required |= uint64_t{1} << (at - n.names.begin());
        }
      }
      const nlohmann::json add = s.value("additionalProperties", nlohmann::json(!has_props));
      if (!(add.is_boolean() && !add.get<bool>())) n.additional = compile(add, depth + 1);
    }
    if (n.branch[kArray]) {
      n.items = s.contains("items") ? compile(s["items"], depth + 1) : any_node();
      n.min_items = s.value("minItems", int64_t{0});
      n.max_items = s.value("maxItems", std::numeric_limits<int64_t>::max());
      if (n.min_items < 0 || n.max_items < n.min_items)
        throw Error("response schema: `minItems` / `maxItems` out of order");
    }
  }
};

JsonSchema::JsonSchema(const nlohmann::json& schema) {
  SchemaCompiler c{*this, schema, {}, nullptr};
  root_ = c.compile(schema, 0);
}
JsonSchema::~JsonSchema() = default;
const JsonSchema::Node& JsonSchema::root() const {
  return *root_;
}

TokenTexts::TokenTexts(const Tokenizer& tok) {
  const int32_t v = tok.vocab_size();
  bytes_.resize(v), control_.resize(v);
  for (int32_t id = 0; id < v; ++id) {
    control_[id] = tok.is_special(id);
    bytes_[id] = control_[id] ? tok.token_to_piece(id) : tok.token_bytes(id);
  }
  classify();
}

TokenTexts::TokenTexts(std::vector<std::string> bytes, std::vector<bool> control)
    : bytes_(std::move(bytes)), control_(std::move(control)) {
  check(bytes_.size() == control_.size(), "TokenTexts: " + std::to_string(bytes_.size()) +
                                              " token texts but " +
                                              std::to_string(control_.size()) + " control flags");
  classify();
}

void TokenTexts::classify() {
  plain_.resize(bytes_.size());
  for (size_t id = 0; id < bytes_.size(); ++id) {
    const std::string& b = bytes_[id];
    plain_[id] = !control_[id] && !b.empty() && std::none_of(b.begin(), b.end(), [](char ch) {
      const auto c = static_cast<unsigned char>(ch);
      return c == '"' || c == '\\' || c < 0x20;
    });
  }
}

namespace {
enum class F : uint8_t { Value, Object, Array, String, Number, Literal, Prefix };
// Literals of the kinds without a schema of their own.
const std::vector<std::string> kBools = {"true", "false"}, kNulls = {"null"};

struct Frame {
  F kind;
  uint8_t phase = 0;  // Object: 0 after '{', 1 before ':', 3 after a value, 4 after ','
                      // Array: 0 after '[', 1 after a value, 2 after ','
                      // Number: the JSON number grammar's state
  bool key = false;   // String: an object's key
  uint8_t esc = 0;    // String: 1 after '\', 2..5 hex digits of \u still to come (5 = four)
  const JsonSchema::Node* node = nullptr;
  const JsonSchema::Node* value = nullptr;         // Object: the schema of the current key's value
  const std::vector<std::string>* lits = nullptr;  // Literal, Prefix
  const std::vector<std::shared_ptr<const JsonSchema>>* schemas = nullptr;  // Prefix
  uint64_t seen = 0;   // Object: the properties written
  uint64_t cands = 0;  // String (key) / Literal / Prefix: the names still matching
  int32_t pos = 0;     // String (key) / Literal / Prefix / Number: bytes so far
  int64_t count = 0;   // Array: items so far
};
}  // namespace

struct JsonConstraint::State {
  std::array<Frame, kMaxDepth> f;
  int depth = 0;
  int ws = 0;
  size_t spos = 0;  // bytes of the suffix matched

  void copy_from(const State& o) {
    std::copy(o.f.begin(), o.f.begin() + o.depth, f.begin());
    depth = o.depth, ws = o.ws, spos = o.spos;
  }
  bool push(Frame fr) {
    if (depth == kMaxDepth) return false;
    f[depth++] = fr;
    return true;
  }
  bool whitespace() { return ++ws <= kMaxWhitespace; }

  // Number grammar: 0 start, 1 after '-', 2 integer digits, 3 after a leading 0, 4 after '.',
  // 5 fraction digits, 6 after 'e', 7 after the exponent's sign, 8 exponent digits.
  // Returns 1 consumed, 0 the number ended before c, -1 c breaks it.
  static int number(Frame& fr, unsigned char c) {
    const bool digit = c >= '0' && c <= '9';
    const bool integer = fr.node->integer;
    auto to = [&](uint8_t s) {
      if (fr.pos >= kMaxNumber) return -1;
      fr.phase = s;
      ++fr.pos;
      return 1;
    };
    const bool can_end = fr.phase == 2 || fr.phase == 3 || fr.phase == 5 || fr.phase == 8;
    switch (fr.phase) {
      case 0:
        if (c == '-') return to(1);
        [[fallthrough]];
      case 1:
        if (c == '0') return to(3);
        if (digit) return to(2);
        return -1;
      case 2:
        if (digit) return to(2);
        break;
      case 4:
        return digit ? to(5) : -1;
      case 5:
        if (digit) return to(5);
        if (c == 'e' || c == 'E') return to(6);
        return 0;
      case 6:
        if (c == '+' || c == '-') return to(7);
        [[fallthrough]];
      case 7:
        return digit ? to(8) : -1;
      case 8:
        return digit ? to(8) : 0;
    }
    // States 2 and 3: a fraction or an exponent may follow.
    if (!integer && c == '.') return to(4);
    if (!integer && (c == 'e' || c == 'E')) return to(6);
    return can_end ? 0 : -1;
  }

  // Consumes one byte; false where it cannot continue the text.
  bool step(unsigned char c, const std::string& suffix) {
    for (;;) {
      if (depth == 0) {
        if (spos < suffix.size() && static_cast<unsigned char>(suffix[spos]) == c) {
          ++spos;
          return true;
        }
        return false;
      }
      Frame& fr = f[depth - 1];
      switch (fr.kind) {
        case F::Value: {
          if (is_ws(c)) return whitespace();
          ws = 0;
          const JsonSchema::Node* n = fr.node;
          if (!n->literals.empty()) {
            fr = Frame{F::Literal};
            fr.lits = &n->literals;
            fr.cands =
                (n->literals.size() == 64 ? ~uint64_t{0} : (uint64_t{1} << n->literals.size()) - 1);
            continue;
          }
          int k;
          if (c == '{')
            k = kObject;
          else if (c == '[')
            k = kArray;
          else if (c == '"')
            k = kString;
          else if (c == '-' || (c >= '0' && c <= '9'))
            k = kNumber;
          else if (c == 't' || c == 'f')
            k = kBool;
          else if (c == 'n')
            k = kNull;
          else
            return false;
          const JsonSchema::Node* b = n->branch[k];
          if (!b) return false;
          switch (k) {
            case kObject:
              fr = Frame{F::Object};
              fr.node = b;
              return true;
            case kArray:
              fr = Frame{F::Array};
              fr.node = b;
              return true;
            case kString:
              fr = Frame{F::String};
              fr.node = b;
              return true;
            case kNumber:
              fr = Frame{F::Number};
              fr.node = b;
              continue;
            default:
              fr = Frame{F::Literal};
              fr.lits = k == kBool ? &kBools : &kNulls;
              fr.cands = k == kBool ? 3 : 1;
              continue;
          }
        }
        case F::Literal: {
          const uint64_t next = continuing(fr.cands, *fr.lits, fr.pos, c);
          if (next) {
            fr.cands = next;
            ++fr.pos;
            return true;
          }
          if (!ending(fr.cands, *fr.lits, fr.pos)) return false;
          --depth;  // a whole literal: c belongs to what follows
          continue;
        }
        case F::Prefix: {  // one of the alternatives' prefixes, then its schema's value
          const uint64_t next = continuing(fr.cands, *fr.lits, fr.pos, c);
          if (!next) return false;
          fr.cands = next;
          ++fr.pos;
          const int i = std::countr_zero(next);
          if ((*fr.lits)[i].size() == static_cast<size_t>(fr.pos)) {  // no prefix starts another
            const JsonSchema::Node* root = &(*fr.schemas)[i]->root();
            fr = Frame{F::Value};
            fr.node = root;
          }
          return true;
        }
        case F::Number: {
          const int r = number(fr, c);
          if (r > 0) return true;
          if (r < 0) return false;
          --depth;
          continue;
        }
        case F::String: {
          if (fr.esc == 1) {
            if (c == 'u') {
              fr.esc = 5;
              return true;
            }
            if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
                c == 't') {
              fr.esc = 0;
              return true;
            }
            return false;
          }
          if (fr.esc >= 2) {
            if (!std::isxdigit(c)) return false;
            fr.esc = fr.esc == 2 ? 0 : fr.esc - 1;
            return true;
          }
          if (c < 0x20) return false;
          if (!fr.key) {
            if (c == '"')
              --depth;
            else if (c == '\\')
              fr.esc = 1;
            return true;
          }
          // A key: the declared names it may still be, and whether other keys are allowed.
          Frame& obj = f[depth - 2];
          const JsonSchema::Node* on = obj.node;
          if (c == '"') {
            if (const uint64_t whole = ending(fr.cands, on->names, fr.pos)) {
              const int i = std::countr_zero(whole);
              obj.seen |= uint64_t{1} << i;
              obj.value = on->props[i];
            } else if (on->additional) {
              obj.value = on->additional;
            } else {
              return false;
            }
            obj.phase = 1;
            --depth;
            return true;
          }
          if (c == '\\') {
            if (!on->additional) return false;
            fr.cands = 0;
            fr.esc = 1;
            return true;
          }
          const uint64_t next = continuing(fr.cands, on->names, fr.pos, c);
          if (!next && !on->additional) return false;
          fr.cands = next;
          ++fr.pos;
          return true;
        }
        case F::Object: {
          if (is_ws(c)) return whitespace();
          ws = 0;
          const JsonSchema::Node* n = fr.node;
          const auto all =
              n->names.size() == 64 ? ~uint64_t{0} : (uint64_t{1} << n->names.size()) - 1;
          const uint64_t open = all & ~fr.seen;
          const bool complete = (fr.seen & n->required) == n->required;
          switch (fr.phase) {
            case 0:
            case 4:
              if (c == '"' && (open || n->additional)) {
                fr.phase = 2;  // inside the key
                Frame k{F::String};
                k.key = true;
                k.cands = open;
                return push(k);
              }
              if (c == '}' && fr.phase == 0 && complete) {
                --depth;
                return true;
              }
              return false;
            case 1:
              if (c != ':') return false;
              fr.phase = 3;
              {
                Frame v{F::Value};
                v.node = fr.value;
                return push(v);
              }
            case 3:
              if (c == ',' && (open || n->additional)) {
                fr.phase = 4;
                return true;
              }
              if (c == '}' && complete) {
                --depth;
                return true;
              }
              return false;
          }
          return false;
        }
        case F::Array: {
          if (is_ws(c)) return whitespace();
          const JsonSchema::Node* n = fr.node;
          if (fr.phase == 0 && c == ']') {
            if (n->min_items > 0) return false;
            ws = 0;
            --depth;
            return true;
          }
          if (fr.phase == 1) {
            ws = 0;
            if (c == ',' && fr.count < n->max_items) {
              fr.phase = 2;
              return true;
            }
            if (c == ']' && fr.count >= n->min_items) {
              --depth;
              return true;
            }
            return false;
          }
          if (fr.count >= n->max_items) return false;
          ++fr.count;
          fr.phase = 1;
          Frame v{F::Value};
          v.node = n->items;
          if (!push(v)) return false;
          continue;  // c starts the item
        }
      }
    }
  }

  // Whether the text may end here: the open frames are a number or literal that could end, then
  // nothing but the whole suffix.
  bool could_end(const std::string& suffix) const {
    int d = depth;
    for (; d > 0; --d) {
      const Frame& fr = f[d - 1];
      if (fr.kind == F::Number &&
          (fr.phase == 2 || fr.phase == 3 || fr.phase == 5 || fr.phase == 8))
        continue;
      if (fr.kind == F::Literal && ending(fr.cands, *fr.lits, fr.pos)) continue;
      break;
    }
    return (d == 0 && suffix.empty()) || (depth == 0 && spos == suffix.size());
  }

  bool in_free_string() const {
    return depth > 0 && f[depth - 1].kind == F::String && !f[depth - 1].key &&
           f[depth - 1].esc == 0;
  }
};

JsonConstraint::JsonConstraint(std::shared_ptr<const JsonSchema> schema,
                               std::shared_ptr<const TokenTexts> texts, std::string suffix,
                               std::vector<int32_t> end_tokens)
    : JsonConstraint(std::vector<JsonAlternative>{{"", std::move(schema)}}, std::move(texts),
                     std::move(suffix), std::move(end_tokens)) {}

JsonConstraint::JsonConstraint(std::vector<JsonAlternative> alternatives,
                               std::shared_ptr<const TokenTexts> texts, std::string suffix,
                               std::vector<int32_t> end_tokens)
    : texts_(std::move(texts)),
      suffix_(std::move(suffix)),
      end_(std::move(end_tokens)),
      state_(std::make_unique<State>()) {
  if (alternatives.empty() || alternatives.size() > kMaxChoices)
    throw Error("constrained decoding: 1 to 64 alternatives");
  for (JsonAlternative& a : alternatives) {
    prefixes_.push_back(std::move(a.prefix));
    schemas_.push_back(std::move(a.schema));
  }
  for (size_t i = 0; i < prefixes_.size(); ++i)
    for (size_t j = 0; j < prefixes_.size(); ++j)
      if (i != j && prefixes_[j].rfind(prefixes_[i], 0) == 0)
        throw Error("constrained decoding: the prefix \"" + prefixes_[i] + "\" starts \"" +
                    prefixes_[j] + "\"");
  if (prefixes_.size() == 1 && prefixes_[0].empty()) {
    Frame root{F::Value};
    root.node = &schemas_[0]->root();
    state_->push(root);
  } else {
    Frame first{F::Prefix};
    first.lits = &prefixes_;
    first.schemas = &schemas_;
    first.cands = prefixes_.size() == 64 ? ~uint64_t{0} : (uint64_t{1} << prefixes_.size()) - 1;
    state_->push(first);
  }
}
JsonConstraint::~JsonConstraint() = default;

bool JsonConstraint::complete() const {
  return state_->could_end(suffix_);
}

bool JsonConstraint::accepts(std::string_view text) const {
  State s;
  s.copy_from(*state_);
  for (char ch : text)
    if (!s.step(static_cast<unsigned char>(ch), suffix_)) return false;
  return true;
}

void JsonConstraint::mask(std::span<float> logits) const {
  constexpr float kNo = -std::numeric_limits<float>::infinity();
  const auto v = static_cast<int32_t>(std::min<size_t>(logits.size(), texts_->size()));
  for (size_t i = v; i < logits.size(); ++i) logits[i] = kNo;
  const bool can_end = complete();
  // Which first bytes can continue the text: most tokens are refused on their first byte.
  std::array<bool, 256> first{};
  State s;
  for (int b = 0; b < 256; ++b) {
    s.copy_from(*state_);
    first[b] = s.step(static_cast<unsigned char>(b), suffix_);
  }
  const bool fast = state_->in_free_string();
  const bool suffix_phase = state_->depth == 0;
  bool any = false;
  for (int32_t id = 0; id < v; ++id) {
    if (logits[id] == kNo) continue;
    if (std::find(end_.begin(), end_.end(), id) != end_.end()) {
      if (can_end)
        any = true;
      else
        logits[id] = kNo;
      continue;
    }
    const std::string& b = texts_->bytes(id);
    if (b.empty() || (texts_->control(id) && !suffix_phase) ||
        !first[static_cast<unsigned char>(b[0])]) {
      logits[id] = kNo;
      continue;
    }
    bool ok = true;
    if (!(fast && texts_->plain(id))) {
      s.copy_from(*state_);
      for (char ch : b)
        if (!s.step(static_cast<unsigned char>(ch), suffix_)) {
          ok = false;
          break;
        }
    }
    if (ok)
      any = true;
    else
      logits[id] = kNo;
  }
  if (!any) throw Error("constrained decoding: no token of the vocabulary continues the text");
}

void JsonConstraint::accept(int32_t token) {
  if (std::find(end_.begin(), end_.end(), token) != end_.end()) {
    if (complete()) return;
    throw Error("constrained decoding: the text ends before it is complete");
  }
  if (token < 0 || token >= texts_->size())
    throw Error("constrained decoding: token " + std::to_string(token) + " out of range");
  const std::string& b = texts_->bytes(token);
  State s;
  s.copy_from(*state_);
  for (char ch : b)
    if (!s.step(static_cast<unsigned char>(ch), suffix_))
      throw Error("constrained decoding: token " + std::to_string(token) +
                  " does not continue the text");
  state_->copy_from(s);
}

}  // namespace epwa
