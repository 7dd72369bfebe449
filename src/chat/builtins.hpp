// Jinja2's filters, tests and globals, and the Python methods templates call on strings, dicts and
// lists (text.strip(), message.get('x'), ...), as far as chat templates use them.
#pragma once
#include <optional>
#include <string>
#include <unordered_map>

#include "chat/value.hpp"

namespace epwa::jinja {

// Bounds that keep a hostile template from exhausting memory (checked where sizes grow).
inline constexpr size_t kMaxStringBytes = size_t(64) << 20;
inline constexpr size_t kMaxListItems = 100'000;

// raise_exception(message) in a template: the template refused its input.
class TemplateRaised : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

Value call_filter(const std::string& name, const Value& subject, Args& args);
bool call_test(const std::string& name, const Value& v, Args& args);
// obj.name as a bound method (strings, dicts, lists), or nullopt when the type has none.
std::optional<Value> method(const Value& obj, const std::string& name);
// range, namespace, dict, raise_exception, strftime_now.
std::unordered_map<std::string, Value> globals();

// Python's arithmetic on values: + - * / // % ** (throws Error on unsupported operand types).
Value arithmetic(const std::string& op, const Value& a, const Value& b);
// obj[key], then obj.key, as Jinja2's getitem (missing: Undefined).
Value get_item(const Value& obj, const Value& key);
// obj.key, then obj[key], as Jinja2's getattr (missing: Undefined).
Value get_attr(const Value& obj, const std::string& key);
// obj[start:stop:step] on a list, tuple or string (None parts: Python's defaults).
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
// The items a for loop visits: list/tuple items, dict keys, string characters; Undefined: none.
List iterate(const Value& v);
// Python's `a in b`.
bool contains(const Value& container, const Value& item);
// Python's len().
int64_t length(const Value& v);

}  // namespace epwa::jinja
