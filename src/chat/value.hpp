// The values a chat template computes with, modelled on the Python objects Jinja2 sees when
// transformers renders a template: None, bool, int, float, str (UTF-8 here), list/tuple, dict (keys
// are strings, insertion order kept), namespace, callables, and Undefined. Printing, truth,
// equality and ordering follow Python's rules, so renders match Jinja2's to the byte.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace epwa::jinja {

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;
// A call's arguments: positional, then keyword (in call order).
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<Value(Args&)>;

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Callable };

  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                     // String; the name for Undefined (for its error message)
  std::shared_ptr<const List> list;  // List (tuple when is_tuple)
  bool is_tuple = false;
  std::shared_ptr<const Dict> dict;                  // Dict
  std::shared_ptr<std::map<std::string, Value>> ns;  // Namespace (the one mutable kind)
  std::shared_ptr<const Function> fn;                // Callable

  static Value undefined(std::string name = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value real(double v);
  static Value string(std::string v);
  static Value make_list(List v, bool tuple = false);
  static Value make_dict(Dict v);
  static Value callable(Function fn);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }

  // dict lookup: nullptr when absent.
  const Value* find(const std::string& key) const;
};

// Python's bool(v).
bool truthy(const Value& v);
// Python's str(v) (what {{ v }} prints; Undefined prints nothing) and repr(v).
std::string to_str(const Value& v);
std::string repr(const Value& v);
// Python's float repr: the shortest digits that round-trip, fixed notation for exponents -4..15.
std::string float_repr(double d);
// Python's ==, and the order of < (throws Error "chat template: cannot compare ..." for mixed
// kinds).
bool equals(const Value& a, const Value& b);
bool less(const Value& a, const Value& b);
// The Python type name, for error messages ("str", "int", "list", ...).
std::string type_name(const Value& v);

// JSON <-> values (JSON objects keep their key order; nlohmann::ordered_json).
Value from_json(const nlohmann::ordered_json& j);
// json.dumps(v, ensure_ascii=False, indent=..., separators=..., sort_keys=...), as transformers'
// tojson filter calls it.
struct JsonStyle {
  int indent = -1;                // < 0: all on one line
  std::string item_sep, key_sep;  // empty: Python's defaults for the indent
  bool sort_keys = false;
};
// Throws Error for values JSON cannot hold (Undefined, callables).
std::string to_json_text(const Value& v, const JsonStyle& style);

}  // namespace epwa::jinja
