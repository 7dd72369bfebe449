#include "chat/builtins.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <set>

#include "chat/ast.hpp"
#include "chat/unicode_case.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/text.hpp"
#include "tokenizer/utf8.hpp"

namespace epwa::jinja {
namespace {

using K = Value::Kind;

// ---- strings as Python sees them (code points) ----

std::u32string code_points(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    size_t len = 1;
    out += tok::decode_utf8(s, i, len);
    i += len;
  }
  return out;
}
std::string utf8(std::u32string_view cps) {
  std::string out;
  for (char32_t c : cps) tok::append_utf8(out, c);
  return out;
}

// Python's str.isspace().
bool py_space(char32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::u32string cps = code_points(s);
  std::u32string set;
  const bool by_set = !chars.is_none() && !chars.is_undefined();
  if (by_set) {
    if (!chars.is_string()) throw Error("strip arg must be None or str");
    set = code_points(chars.s);
  }
  auto drop = [&](char32_t c) {
    return by_set ? set.find(c) != std::u32string::npos : py_space(c);
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && drop(cps[b])) ++b;
  if (right)
    while (e > b && drop(cps[e - 1])) --e;
  return utf8(std::u32string_view(cps).substr(b, e - b));
}

// Python's str.title() and str.capitalize(), with per-character case data (chat/unicode_case.hpp).
std::string title(const std::string& s) {
  std::u32string cps = code_points(s);
  bool prev_cased = false;
  for (char32_t& c : cps) {
    const bool cased = is_cased(c);
    c = prev_cased ? to_lower(c) : to_title(c);
    prev_cased = cased;
  }
  return utf8(cps);
}
// Jinja2's title filter (not str.title()): each piece after whitespace, '-', '(', '{', '[' or '<'
// gets its first character upper-cased and the rest lower-cased.
std::string title_filter(const std::string& s) {
  const std::u32string cps = code_points(s);
  std::string out;
  size_t k = 0;
  while (k < cps.size()) {
    const char32_t c = cps[k];
    if (py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<') {
      tok::append_utf8(out, c);
      ++k;
      continue;
    }
    size_t e = k;
    while (e < cps.size() && !(py_space(cps[e]) || cps[e] == '-' || cps[e] == '(' ||
                               cps[e] == '{' || cps[e] == '[' || cps[e] == '<'))
      ++e;
    out += case_map(utf8(std::u32string_view(cps).substr(k, 1)), true);
    out += case_map(utf8(std::u32string_view(cps).substr(k + 1, e - k - 1)), false);
    k = e;
  }
  return out;
}

std::string capitalize(const std::string& s) {
  std::u32string cps = code_points(s);
  for (size_t k = 0; k < cps.size(); ++k) cps[k] = k == 0 ? to_title(cps[k]) : to_lower(cps[k]);
  return utf8(cps);
}

List split(const std::string& s, const Value& sep, int64_t maxsplit, bool from_right) {
  List out;
  if (sep.is_none() || sep.is_undefined()) {  // runs of whitespace, no empty pieces
    const std::u32string cps = code_points(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t k = 0;
    while (k < cps.size()) {
      while (k < cps.size() && py_space(cps[k])) ++k;
      if (k == cps.size()) break;
      size_t b = k;
      while (k < cps.size() && !py_space(cps[k])) ++k;
      words.emplace_back(b, k);
    }
    if (maxsplit >= 0 && int64_t(words.size()) > maxsplit + 1) {
      // The unsplit remainder keeps its inner whitespace (and loses the outer on its side).
      if (!from_right) {
        auto rest = std::u32string_view(cps).substr(words[size_t(maxsplit)].first);
        size_t e = rest.size();
        while (e > 0 && py_space(rest[e - 1])) --e;
        words.resize(size_t(maxsplit));
        for (auto [b2, e2] : words)
          out.push_back(Value::string(utf8(std::u32string_view(cps).substr(b2, e2 - b2))));
        out.push_back(Value::string(utf8(rest.substr(0, e))));
        return out;
      }
      const size_t cut = words.size() - size_t(maxsplit);
      auto head = std::u32string_view(cps).substr(0, words[cut - 1].second);
      size_t b = 0;
      while (b < head.size() && py_space(head[b])) ++b;
      out.push_back(Value::string(utf8(head.substr(b))));
      for (size_t w = cut; w < words.size(); ++w)
        out.push_back(Value::string(utf8(
            std::u32string_view(cps).substr(words[w].first, words[w].second - words[w].first))));
      return out;
    }
    for (auto [b, e] : words)
      out.push_back(Value::string(utf8(std::u32string_view(cps).substr(b, e - b))));
    return out;
  }
  if (!sep.is_string()) throw Error("must be str or None, not " + type_name(sep));
  if (sep.s.empty()) throw Error("empty separator");
  std::vector<std::string> parts;
  size_t start = 0, pos;
  while ((pos = s.find(sep.s, start)) != std::string::npos) {
    parts.push_back(s.substr(start, pos - start));
    start = pos + sep.s.size();
  }
  parts.push_back(s.substr(start));
  if (maxsplit >= 0 && int64_t(parts.size()) > maxsplit + 1) {
    std::vector<std::string> merged;
    const size_t keep = size_t(maxsplit);
    if (!from_right) {
      merged.assign(parts.begin(), parts.begin() + keep);
      std::string rest = parts[keep];
      for (size_t k = keep + 1; k < parts.size(); ++k) rest += sep.s + parts[k];
      merged.push_back(rest);
    } else {
      const size_t head_n = parts.size() - keep;
      std::string head = parts[0];
      for (size_t k = 1; k < head_n; ++k) head += sep.s + parts[k];
      merged.push_back(head);
      merged.insert(merged.end(), parts.begin() + head_n, parts.end());
    }
    parts = std::move(merged);
  }
  for (auto& p : parts) out.push_back(Value::string(std::move(p)));
  return out;
}

std::string replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` around every character
    const auto chars = tok::utf8_chars(s);
    int64_t n = 0;
    for (auto c : chars) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      out += c;
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  size_t start = 0, pos;
  int64_t n = 0;
  while ((count < 0 || n < count) && (pos = s.find(from, start)) != std::string::npos) {
    out += s.substr(start, pos - start) + to;
    start = pos + from.size();
    ++n;
    if (out.size() > kMaxStringBytes) throw Error("the rendered text would exceed 64 MiB");
  }
  return out + s.substr(start);
}

// ---- arguments ----

// Binds call arguments to parameter names (Python rules); missing ones get `defaults` (from the
// right) or Undefined.
std::vector<Value> bind(Args& a, const std::string& fname, std::initializer_list<const char*> names,
                        std::vector<Value> defaults = {}) {
  const size_t n = names.size();
  if (a.positional.size() > n)
    throw Error(fname + "() takes at most " + std::to_string(n) + " arguments (" +
                std::to_string(a.positional.size()) + " given)");
  std::vector<Value> out(n);
  std::vector<bool> set(n, false);
  for (size_t k = 0; k < a.positional.size(); ++k) {
    out[k] = a.positional[k];
    set[k] = true;
  }
  for (auto& [key, v] : a.keyword) {
    size_t k = 0;
    for (const char* nm : names) {
      if (key == nm) break;
      ++k;
    }
    if (k == n) throw Error(fname + "() got an unexpected keyword argument '" + key + "'");
    if (set[k]) throw Error(fname + "() got multiple values for argument '" + key + "'");
    out[k] = v;
    set[k] = true;
  }
  const size_t first_default = n - defaults.size();
  for (size_t k = 0; k < n; ++k)
    if (!set[k]) {
      if (k >= first_default)
        out[k] = defaults[k - first_default];
      else
        throw Error(fname + "() missing required argument '" + *(names.begin() + k) + "'");
    }
  return out;
}

int64_t as_int(const Value& v, const std::string& what) {
  if (v.kind == K::Int) return v.i;
  if (v.kind == K::Bool) return v.b;
  throw Error(what + " must be an integer, not " + type_name(v));
}

const std::string& as_string(const Value& v, const std::string& what) {
  if (!v.is_string()) throw Error(what + " must be a string, not " + type_name(v));
  return v.s;
}

// Applies another filter or a test by name (map('upper'), select('odd')).
Value attribute_path(const Value& v, const Value& path) {
  if (path.kind == K::Int) return get_item(v, path);
  Value cur = v;
  const std::string& p = as_string(path, "attribute");
  size_t start = 0;
  while (true) {
    const size_t dot = p.find('.', start);
    const std::string part =
        p.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = numeric ? get_item(cur, Value::integer(std::stoll(part)))
                  : get_item(cur, Value::string(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Value str_method(const std::string& s, const std::string& name, Args& a) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    auto p = bind(a, name, {"chars"}, {Value::none()});
    return Value::string(strip(s, p[0], name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    auto p = bind(a, name, {"sep", "maxsplit"}, {Value::none(), Value::integer(-1)});
    return Value::make_list(split(s, p[0], as_int(p[1], "maxsplit"), name == "rsplit"));
  }
  if (name == "startswith" || name == "endswith") {
    auto p = bind(a, name, {"prefix"});
    List options = p[0].is_list() && p[0].is_tuple ? *p[0].list : List{p[0]};
    for (const Value& o : options) {
      const std::string& x = as_string(o, name + " argument");
      if (name == "startswith"
              ? s.compare(0, x.size(), x) == 0 && s.size() >= x.size()
              : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0)
        return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (name == "lower" || name == "upper") {
    bind(a, name, {});
    return Value::string(case_map(s, name == "upper"));
  }
  if (name == "title") return bind(a, name, {}), Value::string(title(s));
  if (name == "capitalize") return bind(a, name, {}), Value::string(capitalize(s));
  if (name == "replace") {
    auto p = bind(a, name, {"old", "new", "count"}, {Value::integer(-1)});
    return Value::string(
        replace(s, as_string(p[0], "old"), as_string(p[1], "new"), as_int(p[2], "count")));
  }
  if (name == "find" || name == "rfind" || name == "count") {
    auto p = bind(a, name, {"sub"});
    const std::string& sub = as_string(p[0], "sub");
    if (name == "count") {
      if (sub.empty()) return Value::integer(int64_t(code_points(s).size()) + 1);
      int64_t n = 0;
      for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size()))
        ++n;
      return Value::integer(n);
    }
    const size_t pos = name == "find" ? s.find(sub) : s.rfind(sub);
    if (pos == std::string::npos) return Value::integer(-1);
    return Value::integer(int64_t(code_points(s.substr(0, pos)).size()));
  }
  if (name == "join") {
    auto p = bind(a, name, {"iterable"});
    std::string out;
    bool first = true;
    for (const Value& v : iterate(p[0])) {
      if (!first) out += s;
      first = false;
      out += as_string(v, "join item");
    }
    return Value::string(out);
  }
  if (name == "splitlines") {
    bind(a, name, {});
    List out;
    size_t start = 0;
    for (size_t k = 0; k < s.size(); ++k)
      if (s[k] == '\n') {
        out.push_back(Value::string(s.substr(start, k - start)));
        start = k + 1;
      }
    if (start < s.size()) out.push_back(Value::string(s.substr(start)));
    return Value::make_list(std::move(out));
  }
  if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum") {
    bind(a, name, {});
    const std::u32string cps = code_points(s);
    if (cps.empty()) return Value::boolean(false);
    for (char32_t c : cps) {
      const bool ok = name == "isdigit"   ? is_digit(c)
                      : name == "isalpha" ? is_alpha(c)
                      : name == "isspace" ? py_space(c)
                                          : is_alnum(c);
      if (!ok) return Value::boolean(false);
    }
    return Value::boolean(true);
  }
  throw Error("'str' object has no method '" + name + "'");
}

const std::set<std::string> kStrMethods = {
    "strip", "lstrip", "rstrip",     "split",      "rsplit",  "startswith", "endswith",
    "lower", "upper",  "title",      "capitalize", "replace", "find",       "rfind",
    "count", "join",   "splitlines", "isdigit",    "isalpha", "isspace",    "isalnum"};
const std::set<std::string> kDictMethods = {"items", "keys", "values", "get"};
const std::set<std::string> kListMethods = {"index", "count"};
// What the sandbox refuses: a template may not modify its inputs.
const std::set<std::string> kMutators = {"append",  "extend", "insert", "pop",
                                         "remove",  "clear",  "update", "setdefault",
                                         "popitem", "sort",   "reverse"};

List dict_items(const Value& d) {
  List out;
  for (const auto& [k, v] : *d.dict) out.push_back(Value::make_list({Value::string(k), v}, true));
  return out;
}

Value sorted(List items, bool reverse, bool case_sensitive, const Value& attribute) {
  auto key = [&](const Value& v) {
    Value k = attribute.is_none() || attribute.is_undefined() ? v : attribute_path(v, attribute);
    if (!case_sensitive && k.is_string()) k = Value::string(case_map(k.s, false));
    return k;
  };
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& v : items) keyed.emplace_back(key(v), v);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? less(y.first, x.first) : less(x.first, y.first);
  });
  List out;
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return Value::make_list(std::move(out));
}

// select/reject/selectattr/rejectattr.
Value select(const Value& seq, Args& a, bool by_attr, bool keep_when) {
  if (by_attr && a.positional.empty()) throw Error("selectattr needs an attribute");
  Value attr = by_attr ? a.positional[0] : Value::none();
  Args test_args;
  std::string test;
  const size_t first = by_attr ? 1 : 0;
  if (a.positional.size() > first) {
    test = as_string(a.positional[first], "test name");
    test_args.positional.assign(a.positional.begin() + long(first) + 1, a.positional.end());
  }
  List out;
  for (const Value& v : iterate(seq)) {
    const Value x = by_attr ? attribute_path(v, attr) : v;
    Args ta = test_args;
    const bool ok = test.empty() ? truthy(x) : call_test(test, x, ta);
    if (ok == keep_when) out.push_back(v);
  }
  return Value::make_list(std::move(out));
}

}  // namespace

// ---- values ----

int64_t length(const Value& v) {
  switch (v.kind) {
    case K::String:
      return int64_t(code_points(v.s).size());
    case K::List:
      return int64_t(v.list->size());
    case K::Dict:
      return int64_t(v.dict->size());
    case K::Undefined:
      return 0;
    default:
      throw Error("object of type '" + type_name(v) + "' has no len()");
  }
}

List iterate(const Value& v) {
  switch (v.kind) {
    case K::List:
      return *v.list;
    case K::Dict: {
      List out;
      for (const auto& [k, x] : *v.dict) out.push_back(Value::string(k));
      return out;
    }
    case K::String: {
      List out;
      for (auto c : tok::utf8_chars(v.s)) out.push_back(Value::string(std::string(c)));
      return out;
    }
    case K::Undefined:
      return {};
    default:
      throw Error("'" + type_name(v) + "' object is not iterable");
  }
}

bool contains(const Value& c, const Value& item) {
  switch (c.kind) {
    case K::String:
      if (!item.is_string())
        throw Error("'in <string>' requires string as left operand, not " + type_name(item));
      return c.s.find(item.s) != std::string::npos;
    case K::List:
      return std::any_of(c.list->begin(), c.list->end(),
                         [&](const Value& x) { return equals(x, item); });
    case K::Dict:
      return item.is_string() && c.find(item.s) != nullptr;
    case K::Undefined:
      return false;
    default:
      throw Error("argument of type '" + type_name(c) + "' is not iterable");
  }
}

std::optional<Value> method(const Value& obj, const std::string& name) {
  if (kMutators.count(name) && (obj.is_list() || obj.is_dict()))
    return Value::callable([name, t = type_name(obj)](Args&) -> Value {
      throw Error("a template may not modify its input (" + t + "." + name + ")");
    });
  if (obj.is_string() && kStrMethods.count(name)) {
    std::string s = obj.s;
    return Value::callable([s, name](Args& a) { return str_method(s, name, a); });
  }
  if (obj.is_dict() && kDictMethods.count(name)) {
    return Value::callable([obj, name](Args& a) -> Value {
      if (name == "items") return bind(a, name, {}), Value::make_list(dict_items(obj));
      if (name == "get") {
        auto p = bind(a, name, {"key", "default"}, {Value::none()});
        const Value* v = p[0].is_string() ? obj.find(p[0].s) : nullptr;
        return v ? *v : p[1];
      }
      bind(a, name, {});
      List out;
      for (const auto& [k, v] : *obj.dict) out.push_back(name == "keys" ? Value::string(k) : v);
      return Value::make_list(std::move(out));
    });
  }
  if (obj.is_list() && kListMethods.count(name)) {
    return Value::callable([obj, name](Args& a) -> Value {
      auto p = bind(a, name, {"value"});
      int64_t n = 0;
      for (size_t k = 0; k < obj.list->size(); ++k)
        if (equals((*obj.list)[k], p[0])) {
          if (name == "index") return Value::integer(int64_t(k));
          ++n;
        }
      if (name == "index") throw Error(repr(p[0]) + " is not in list");
      return Value::integer(n);
    });
  }
  return std::nullopt;
}

Value get_attr(const Value& obj, const std::string& key) {
  if (obj.is_undefined())
    throw Error("'" + (obj.s.empty() ? std::string("value") : obj.s) + "' is undefined (reading ." +
                key + ")");
  if (auto m = method(obj, key)) return *m;
  if (obj.is_dict()) {
    if (const Value* v = obj.find(key)) return *v;
  } else if (obj.kind == K::Namespace) {
    auto it = obj.ns->find(key);
    if (it != obj.ns->end()) return it->second;
  }
  return Value::undefined(key);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined())
    throw Error("'" + (obj.s.empty() ? std::string("value") : obj.s) + "' is undefined (reading [" +
                repr(key) + "])");
  if ((obj.is_list() || obj.is_string()) && (key.kind == K::Int || key.kind == K::Bool)) {
    const int64_t n = length(obj);
    int64_t i = key.kind == K::Int ? key.i : key.b;
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined();
    if (obj.is_list()) return (*obj.list)[size_t(i)];
    const std::u32string cps = code_points(obj.s);
    return Value::string(utf8(std::u32string_view(cps).substr(size_t(i), 1)));
  }
  if (obj.is_dict() && key.is_string()) {
    if (const Value* v = obj.find(key.s)) return *v;
  }
  if (obj.kind == K::Namespace && key.is_string()) {
    auto it = obj.ns->find(key.s);
    if (it != obj.ns->end()) return it->second;
  }
  if (key.is_string())
    if (auto m = method(obj, key.s)) return *m;
  return Value::undefined(key.is_string() ? key.s : std::string());
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (!obj.is_list() && !obj.is_string())
    throw Error("'" + type_name(obj) + "' object is not subscriptable");
  auto opt = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    return as_int(v, std::string("slice ") + what);
  };
  const int64_t n = length(obj);
  const int64_t st = opt(step, "step").value_or(1);
  if (st == 0) throw Error("slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += n;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t b = clamp(opt(start, "start"), st > 0 ? 0 : n - 1);
  const int64_t e = clamp(opt(stop, "stop"), st > 0 ? n : -1);
  std::vector<size_t> idx;
  for (int64_t k = b; st > 0 ? k < e : k > e; k += st) idx.push_back(size_t(k));
  if (obj.is_list()) {
    List out;
    for (size_t k : idx) out.push_back((*obj.list)[k]);
    return Value::make_list(std::move(out), obj.is_tuple);
  }
  const std::u32string cps = code_points(obj.s);
  std::u32string out;
  for (size_t k : idx) out += cps[k];
  return Value::string(utf8(out));
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  auto unsupported = [&]() -> Error {
    if (a.is_undefined() || b.is_undefined()) {
      const Value& u = a.is_undefined() ? a : b;
      return Error("'" + (u.s.empty() ? std::string("value") : u.s) + "' is undefined (in " + op +
                   ")");
    }
    return Error("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" +
                 type_name(b) + "'");
  };
  if (a.is_number() && b.is_number()) {
    const bool fl = a.kind == K::Float || b.kind == K::Float;
    const double x = a.kind == K::Float ? a.f : a.kind == K::Int ? double(a.i) : a.b;
    const double y = b.kind == K::Float ? b.f : b.kind == K::Int ? double(b.i) : b.b;
    const int64_t p = a.kind == K::Int ? a.i : a.b, q = b.kind == K::Int ? b.i : b.b;
    int64_t r;
    if (op == "+") {
      if (fl) return Value::real(x + y);
      if (__builtin_add_overflow(p, q, &r)) throw Error("integer overflow in +");
      return Value::integer(r);
    }
    if (op == "-") {
      if (fl) return Value::real(x - y);
      if (__builtin_sub_overflow(p, q, &r)) throw Error("integer overflow in -");
      return Value::integer(r);
    }
    if (op == "*") {
      if (fl) return Value::real(x * y);
      if (__builtin_mul_overflow(p, q, &r)) throw Error("integer overflow in *");
      return Value::integer(r);
    }
    if (op == "/") {
      if (y == 0) throw Error("division by zero");
      return Value::real(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) throw Error(op == "//" ? "integer division by zero" : "modulo by zero");
      if (fl) {
        double m = std::fmod(x, y);
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        if (op == "%") return Value::real(m);
        return Value::real(std::floor((x - m) / y + 0.5));
      }
      if (p == INT64_MIN && q == -1) throw Error("integer overflow in " + op);
      int64_t d = p / q, m = p % q;
      if (m != 0 && ((m < 0) != (q < 0))) {
        --d;
        m += q;
      }
      return Value::integer(op == "//" ? d : m);
    }
    if (op == "**") {
      if (fl || q < 0) return Value::real(std::pow(x, y));
      int64_t acc = 1;
      for (int64_t k = 0; k < q; ++k)
        if (__builtin_mul_overflow(acc, p, &acc)) throw Error("integer overflow in **");
      return Value::integer(acc);
    }
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.s.size() + b.s.size() > kMaxStringBytes) throw Error("a string would exceed 64 MiB");
      return Value::string(a.s + b.s);
    }
    if (a.is_list() && b.is_list() && a.is_tuple == b.is_tuple) {
      List out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(out), a.is_tuple);
    }
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_list()   ? &a
                       : b.is_string() || b.is_list() ? &b
                                                      : nullptr;
    const Value* cnt = seq == &a ? &b : &a;
    if (seq && (cnt->kind == K::Int || cnt->kind == K::Bool)) {
      const int64_t n = std::max<int64_t>(0, cnt->kind == K::Int ? cnt->i : cnt->b);
      if (seq->is_string()) {
        if (double(seq->s.size()) * double(n) > double(kMaxStringBytes))
          throw Error("a string would exceed 64 MiB");
        std::string out;
        for (int64_t k = 0; k < n; ++k) out += seq->s;
        return Value::string(std::move(out));
      }
      if (double(seq->list->size()) * double(n) > double(kMaxListItems))
        throw Error("a list would exceed 100000 items");
      List out;
      for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq->list->begin(), seq->list->end());
      return Value::make_list(std::move(out), seq->is_tuple);
    }
  }
  throw unsupported();
}

// ---- filters ----

bool known_filter(std::string_view name) {
  static const std::set<std::string, std::less<>> names = {
      "abs",    "attr",       "capitalize", "count",    "d",       "default", "dictsort",
      "e",      "escape",     "first",      "float",    "indent",  "int",     "items",
      "join",   "last",       "length",     "list",     "lower",   "map",     "max",
      "min",    "reject",     "rejectattr", "replace",  "reverse", "round",   "safe",
      "select", "selectattr", "sort",       "string",   "sum",     "title",   "tojson",
      "trim",   "unique",     "upper",      "wordcount"};
  return names.count(name) > 0;
}

Value call_filter(const std::string& name, const Value& v, Args& a) {
  if (name == "default" || name == "d") {
    auto p =
        bind(a, name, {"default_value", "boolean"}, {Value::string(""), Value::boolean(false)});
    if (v.is_undefined() || (truthy(p[1]) && !truthy(v))) return p[0];
    return v;
  }
  if (name == "length" || name == "count") return bind(a, name, {}), Value::integer(length(v));
  if (name == "string") return bind(a, name, {}), Value::string(to_str(v));
  if (name == "safe") return bind(a, name, {}), v;
  if (name == "trim") {
    auto p = bind(a, name, {"chars"}, {Value::none()});
    return Value::string(strip(to_str(v), p[0], true, true));
  }
  if (name == "lower" || name == "upper") {
    bind(a, name, {});
    return Value::string(case_map(to_str(v), name == "upper"));
  }
  if (name == "title") return bind(a, name, {}), Value::string(title_filter(to_str(v)));
  if (name == "capitalize") return bind(a, name, {}), Value::string(capitalize(to_str(v)));
  if (name == "escape" || name == "e")
    return bind(a, name, {}), Value::string(html_escape(to_str(v)));
  if (name == "replace") {
    auto p = bind(a, name, {"old", "new", "count"}, {Value::none()});
    const int64_t count = p[2].is_none() ? -1 : as_int(p[2], "count");
    return Value::string(replace(to_str(v), to_str(p[0]), to_str(p[1]), count));
  }
  if (name == "tojson") {
    auto p = bind(a, name, {"ensure_ascii", "indent", "separators", "sort_keys"},
                  {Value::boolean(false), Value::none(), Value::none(), Value::boolean(false)});
    if (truthy(p[0])) throw Error("tojson(ensure_ascii=True) is not supported");
    JsonStyle st;
    if (!p[1].is_none()) st.indent = int(as_int(p[1], "indent"));
    if (!p[2].is_none()) {
      if (!p[2].is_list() || p[2].list->size() != 2) throw Error("separators must be a pair");
      st.item_sep = as_string((*p[2].list)[0], "separator");
      st.key_sep = as_string((*p[2].list)[1], "separator");
    }
    st.sort_keys = truthy(p[3]);
    return Value::string(to_json_text(v, st));
  }
  if (name == "join") {
    auto p = bind(a, name, {"d", "attribute"}, {Value::string(""), Value::none()});
    std::string out;
    bool first = true;
    for (const Value& x : iterate(v)) {
      if (!first) out += to_str(p[0]);
      first = false;
      out += to_str(p[1].is_none() ? x : attribute_path(x, p[1]));
      if (out.size() > kMaxStringBytes) throw Error("a string would exceed 64 MiB");
    }
    return Value::string(std::move(out));
  }
  if (name == "first" || name == "last") {
    bind(a, name, {});
    const List items = iterate(v);
    if (items.empty()) return Value::undefined(name);
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return bind(a, name, {}), Value::make_list(iterate(v));
  if (name == "items") {
    bind(a, name, {});
    if (v.is_undefined()) return Value::make_list({});
    if (!v.is_dict()) throw Error("items filter needs a mapping, not " + type_name(v));
    return Value::make_list(dict_items(v));
  }
  if (name == "reverse") {
    bind(a, name, {});
    if (v.is_string()) {
      std::u32string cps = code_points(v.s);
      std::reverse(cps.begin(), cps.end());
      return Value::string(utf8(cps));
    }
    List items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "sort") {
    auto p = bind(a, name, {"reverse", "case_sensitive", "attribute"},
                  {Value::boolean(false), Value::boolean(false), Value::none()});
    return sorted(iterate(v), truthy(p[0]), truthy(p[1]), p[2]);
  }
  if (name == "dictsort") {
    auto p = bind(a, name, {"case_sensitive", "by", "reverse"},
                  {Value::boolean(false), Value::string("key"), Value::boolean(false)});
    if (!v.is_dict()) throw Error("dictsort needs a mapping, not " + type_name(v));
    const int64_t pos = to_str(p[1]) == "value" ? 1 : 0;
    return sorted(dict_items(v), truthy(p[2]), truthy(p[0]), Value::integer(pos));
  }
  if (name == "unique") {
    auto p = bind(a, name, {"case_sensitive", "attribute"}, {Value::boolean(false), Value::none()});
    List out, keys;
    for (const Value& x : iterate(v)) {
      Value k = p[1].is_none() ? x : attribute_path(x, p[1]);
      if (!truthy(p[0]) && k.is_string()) k = Value::string(case_map(k.s, false));
      if (std::none_of(keys.begin(), keys.end(), [&](const Value& y) { return equals(y, k); })) {
        keys.push_back(k);
        out.push_back(x);
      }
    }
    return Value::make_list(std::move(out));
  }
  if (name == "map") {
    List out;
    for (const Value& x : iterate(v)) {
      if (!a.keyword.empty() && a.keyword[0].first == "attribute") {
        Value got = attribute_path(x, a.keyword[0].second);
        if (got.is_undefined() && a.keyword.size() > 1 && a.keyword[1].first == "default")
          got = a.keyword[1].second;
        out.push_back(got);
      } else {
        if (a.positional.empty()) throw Error("map needs a filter name or attribute=");
        Args rest;
        rest.positional.assign(a.positional.begin() + 1, a.positional.end());
        rest.keyword = a.keyword;
        const std::string f = as_string(a.positional[0], "filter name");
        if (!known_filter(f)) throw Error("no filter named '" + f + "'");
        out.push_back(call_filter(f, x, rest));
      }
    }
    return Value::make_list(std::move(out));
  }
  if (name == "select" || name == "reject") return select(v, a, false, name == "select");
  if (name == "selectattr" || name == "rejectattr") return select(v, a, true, name == "selectattr");
  if (name == "attr") {
    auto p = bind(a, name, {"name"});
    return get_attr(v, as_string(p[0], "attribute name"));
  }
  if (name == "int") {
    auto p = bind(a, name, {"default", "base"}, {Value::integer(0), Value::integer(10)});
    if (v.kind == K::Int || v.kind == K::Bool) return Value::integer(v.kind == K::Int ? v.i : v.b);
    if (v.kind == K::Float) return std::isfinite(v.f) ? Value::integer(int64_t(v.f)) : p[0];
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string t = strip(v.s, Value::none(), true, true);
        const long long r = std::stoll(t, &used, int(as_int(p[1], "base")));
        if (used == t.size()) return Value::integer(r);
        const double d = std::stod(t, &used);
        if (used == t.size()) return Value::integer(int64_t(d));
      } catch (const std::exception&) {
      }
    }
    return p[0];
  }
  if (name == "float") {
    auto p = bind(a, name, {"default"}, {Value::real(0)});
    if (v.is_number())
      return Value::real(v.kind == K::Float ? v.f : v.kind == K::Int ? double(v.i) : v.b);
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string t = strip(v.s, Value::none(), true, true);
        const double d = std::stod(t, &used);
        if (used == t.size()) return Value::real(d);
      } catch (const std::exception&) {
      }
    }
    return p[0];
  }
  if (name == "abs") {
    bind(a, name, {});
    if (v.kind == K::Float) return Value::real(std::fabs(v.f));
    if (v.kind == K::Int) {
      if (v.i == INT64_MIN) throw Error("integer overflow in abs");
      return Value::integer(v.i < 0 ? -v.i : v.i);
    }
    if (v.kind == K::Bool) return Value::integer(v.b);
    throw Error("bad operand type for abs(): '" + type_name(v) + "'");
  }
  if (name == "round") {
    auto p = bind(a, name, {"precision", "method"}, {Value::integer(0), Value::string("common")});
    if (!v.is_number()) throw Error("round needs a number, not " + type_name(v));
    const double x = v.kind == K::Float ? v.f : v.kind == K::Int ? double(v.i) : v.b;
    const int64_t digits = as_int(p[0], "precision");
    const double scale = std::pow(10.0, double(digits));
    const std::string m = to_str(p[1]);
    double r;
    if (m == "common" && digits >= 0 && digits < 300) {
      // Python's round(): the exact binary value rounded half-to-even, as printf rounds it.
      char buf[512];
      std::snprintf(buf, sizeof buf, "%.*f", int(digits), x);
      r = std::strtod(buf, nullptr);
    } else if (m == "common")
      r = std::nearbyint(x * scale) / scale;
    else if (m == "floor")
      r = std::floor(x * scale) / scale;
    else if (m == "ceil")
      r = std::ceil(x * scale) / scale;
    else
      throw Error("round method must be 'common', 'ceil' or 'floor'");
    return Value::real(r);
  }
  if (name == "sum") {
    auto p = bind(a, name, {"attribute", "start"}, {Value::none(), Value::integer(0)});
    Value acc = p[1];
    for (const Value& x : iterate(v))
      acc = arithmetic("+", acc, p[0].is_none() ? x : attribute_path(x, p[0]));
    return acc;
  }
  if (name == "min" || name == "max") {
    auto p = bind(a, name, {"case_sensitive", "attribute"}, {Value::boolean(false), Value::none()});
    const Value s = sorted(iterate(v), name == "max", truthy(p[0]), p[1]);
    if (s.list->empty()) return Value::undefined(name);
    return s.list->front();
  }
  if (name == "indent") {
    auto p = bind(a, name, {"width", "first", "blank"},
                  {Value::integer(4), Value::boolean(false), Value::boolean(false)});
    const std::string pad =
        p[0].is_string() ? p[0].s
                         : std::string(size_t(std::max<int64_t>(0, as_int(p[0], "width"))), ' ');
    const std::string s = to_str(v);
    std::string out;
    size_t start = 0;
    bool first_line = true;
    while (true) {
      const size_t nl = s.find('\n', start);
      const std::string line =
          s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      const bool blank = strip(line, Value::none(), true, true).empty();
      if ((first_line ? truthy(p[1]) : true) && (truthy(p[2]) || !blank)) out += pad;
      out += line;
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      first_line = false;
    }
    return Value::string(std::move(out));
  }
  if (name == "wordcount") {
    bind(a, name, {});
    int64_t n = 0;
    bool in_word = false;
    for (char32_t c : code_points(to_str(v))) {
      const bool w = is_alnum(c) || c == '_';
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  throw Error("no filter named '" + name + "'");
}

// ---- tests ----

bool known_test(std::string_view name) {
  static const std::set<std::string, std::less<>> names = {
      "boolean",  "callable", "defined", "divisibleby", "eq",    "equalto", "==",       "even",
      "false",    "float",    "ge",      "gt",          "in",    "integer", "iterable", "le",
      "lower",    "lt",       "mapping", "ne",          "none",  "number",  "odd",      "sameas",
      "sequence", "string",   "true",    "undefined",   "upper", "filter",  "test",     "escaped"};
  return names.count(name) > 0;
}

bool call_test(const std::string& name, const Value& v, Args& a) {
  auto arg = [&]() { return bind(a, name, {"other"})[0]; };
  if (name == "defined") return bind(a, name, {}), !v.is_undefined();
  if (name == "undefined") return bind(a, name, {}), v.is_undefined();
  if (name == "none") return bind(a, name, {}), v.is_none();
  if (name == "true") return bind(a, name, {}), v.kind == K::Bool && v.b;
  if (name == "false") return bind(a, name, {}), v.kind == K::Bool && !v.b;
  if (name == "boolean") return bind(a, name, {}), v.kind == K::Bool;
  if (name == "integer") return bind(a, name, {}), v.kind == K::Int;
  if (name == "float") return bind(a, name, {}), v.kind == K::Float;
  if (name == "number") return bind(a, name, {}), v.is_number();
  if (name == "string") return bind(a, name, {}), v.is_string();
  if (name == "mapping") return bind(a, name, {}), v.is_dict();
  if (name == "iterable")
    return bind(a, name, {}), v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence")
    return bind(a, name, {}), v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "callable") return bind(a, name, {}), v.kind == K::Callable;
  if (name == "escaped") return bind(a, name, {}), false;
  if (name == "lower" || name == "upper") {
    bind(a, name, {});
    const std::string s = to_str(v);
    return s == case_map(s, name == "upper");
  }
  if (name == "odd" || name == "even") {
    bind(a, name, {});
    const int64_t x = as_int(v, name + " test");
    return (((x % 2) + 2) % 2 == 1) == (name == "odd");
  }
  if (name == "divisibleby") {
    const int64_t d = as_int(arg(), "divisibleby argument");
    if (d == 0) throw Error("integer division or modulo by zero");
    return as_int(v, "divisibleby subject") % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, arg());
  if (name == "ne") return !equals(v, arg());
  if (name == "sameas") {
    const Value o = arg();
    if (v.kind != o.kind) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.kind == K::Bool) return v.b == o.b;
    if (v.is_list()) return v.list == o.list;
    if (v.is_dict()) return v.dict == o.dict;
    if (v.kind == K::Namespace) return v.ns == o.ns;
    return false;
  }
  if (name == "lt") return less(v, arg());
  if (name == "le") return !less(arg(), v);
  if (name == "gt") return less(arg(), v);
  if (name == "ge") return !less(v, arg());
  if (name == "in") return contains(arg(), v);
  if (name == "filter") return known_filter(to_str(v));
  if (name == "test") return known_test(to_str(v));
  throw Error("no test named '" + name + "'");
}

// ---- globals ----

std::unordered_map<std::string, Value> globals() {
  std::unordered_map<std::string, Value> g;
  g["range"] = Value::callable([](Args& a) {
    if (!a.keyword.empty()) throw Error("range() takes no keyword arguments");
    std::vector<int64_t> p;
    for (const Value& v : a.positional) p.push_back(as_int(v, "range() argument"));
    int64_t start = 0, stop, step = 1;
    if (p.size() == 1) {
      stop = p[0];
    } else if (p.size() == 2 || p.size() == 3) {
      start = p[0];
      stop = p[1];
      if (p.size() == 3) step = p[2];
    } else {
      throw Error("range() takes 1 to 3 arguments");
    }
    if (step == 0) throw Error("range() arg 3 must not be zero");
    List out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      if (out.size() >= kMaxListItems) throw Error("range() would exceed 100000 items");
      out.push_back(Value::integer(k));
    }
    return Value::make_list(std::move(out));
  });
  g["namespace"] = Value::callable([](Args& a) {
    Value v;
    v.kind = K::Namespace;
    v.ns = std::make_shared<std::map<std::string, Value>>();
    for (const Value& x : a.positional) {
      if (!x.is_dict()) throw Error("namespace() takes a mapping or keyword arguments");
      for (const auto& [k, y] : *x.dict) (*v.ns)[k] = y;
    }
    for (auto& [k, x] : a.keyword) (*v.ns)[k] = x;
    return v;
  });
  g["dict"] = Value::callable([](Args& a) {
    Dict d;
    for (const Value& x : a.positional) {
      if (!x.is_dict()) throw Error("dict() takes a mapping or keyword arguments");
      d.insert(d.end(), x.dict->begin(), x.dict->end());
    }
    for (auto& [k, x] : a.keyword) d.emplace_back(k, x);
    return Value::make_dict(std::move(d));
  });
  g["raise_exception"] = Value::callable([](Args& a) -> Value {
    throw TemplateRaised(a.positional.empty() ? std::string("(no message)")
                                              : to_str(a.positional[0]));
  });
  g["strftime_now"] = Value::callable([](Args& a) {
    auto p = bind(a, "strftime_now", {"format"});
    const std::tm tm = local_time(std::time(nullptr));
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, as_string(p[0], "format").c_str(), &tm);
    return Value::string(std::string(buf, n));
  });
  return g;
}

}  // namespace epwa::jinja
