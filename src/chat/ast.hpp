// The parsed form of a chat template: expressions and statements as plain tagged nodes (the
// interpreter in render.cpp switches on the kind), produced by parse() in parser.cpp.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chat/value.hpp"

namespace epwa::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class K {
    Literal,  // value
    Name,     // name
    Attr,     // args[0].name
    Item,     // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]] (null parts omitted)
    Call,     // args[0](args[1..], kwargs)
    Filter,   // args[0] | name(args[1..], kwargs)
    Test,     // args[0] is [not] name(args[1..])
    Neg,
    Pos,
    Not,
    Binary,   // args[0] name args[1]: + - * / // % ** ~
    Compare,  // args[0] ops[0] args[1] ops[1] args[2] ...: == != < > <= >= in notin
    And,
    Or,
    Cond,  // args[1] if args[0] else args[2] (args[2] null: Undefined)
    List,
    Tuple,
    Dict,  // args: key, value, key, value, ...
  };
  K k;
  int line = 0;
  std::string name;
  Value value;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class K {
    Text,      // text
    Print,     // {{ exprs[0] }}
    If,        // exprs: conditions; bodies: one per condition, then the else body if any
    For,       // targets in exprs[0] [if exprs[1]]: bodies[0], else bodies[1]
    Set,       // targets = exprs[0]; attr_target: targets = {namespace, attribute}
    SetBlock,  // {% set targets[0] %}bodies[0]{% endset %}
    Macro,     // text(params with exprs as defaults, null when none): bodies[0]
    Break,
    Continue,
    With,         // targets[k] = exprs[k] in a new scope: bodies[0]
    FilterBlock,  // bodies[0] piped through exprs[0] (a Filter whose args[0] is null)
    Scope,        // bodies[0] as is ({% generation %}: transformers' marker for assistant text)
  };
  K k;
  int line = 0;
  std::string text;
  std::vector<std::string> targets;
  bool attr_target = false;
  std::vector<ExprPtr> exprs;
  std::vector<Body> bodies;
  std::vector<std::string> params;
};

struct Template {
  Body body;
};

// Parses Jinja2 source as transformers configures it (trim_blocks, lstrip_blocks, loop controls).
// Throws Error "line N: ..." on a syntax error or an unknown filter/test.
std::unique_ptr<Template> parse(std::string_view source);

// Filter and test names the interpreter knows (builtins.cpp), checked at parse time as Jinja2 does.
bool known_filter(std::string_view name);
bool known_test(std::string_view name);

}  // namespace epwa::jinja
