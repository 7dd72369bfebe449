// Recursive descent over the tokens, with Jinja2's operator precedence (lowest first): conditional,
// or, and, not, comparisons, + -, ~, * / // %, **, unary - +, then postfix (.attr [item] (call))
// and filters / tests, which bind tighter than arithmetic.
#include <algorithm>

#include "chat/ast.hpp"
#include "chat/lexer.hpp"
#include "epwa/error.hpp"

namespace epwa::jinja {
namespace {

using T = Token::T;

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  std::unique_ptr<Template> run() {
    auto tpl = std::make_unique<Template>();
    tpl->body = body({});
    if (peek().t != T::End) fail("unexpected '" + describe(peek()) + "'");
    return tpl;
  }

 private:
  const Token& peek(size_t ahead = 0) const { return t_[std::min(p_ + ahead, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(p_++, t_.size() - 1)]; }
  int line() const { return peek().line; }

  [[noreturn]] void fail(const std::string& msg) const {
    throw Error("line " + std::to_string(line()) + ": " + msg);
  }
  static std::string describe(const Token& t) {
    switch (t.t) {
      case T::End:
        return "end of template";
      case T::BlockEnd:
        return "%}";
      case T::VarEnd:
        return "}}";
      default:
        return t.text;
    }
  }

  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).t == T::Op && peek(ahead).text == op;
  }
  bool is_name(const char* name, size_t ahead = 0) const {
    return peek(ahead).t == T::Name && peek(ahead).text == name;
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(std::string("expected '") + op + "', got '" + describe(peek()) + "'");
    ++p_;
  }
  std::string expect_name() {
    if (peek().t != T::Name) fail("expected a name, got '" + describe(peek()) + "'");
    return next().text;
  }
  void expect_block_end() {
    if (peek().t != T::BlockEnd) fail("expected '%}', got '" + describe(peek()) + "'");
    ++p_;
  }

  // Statements until a block tag whose keyword is in `ends` (left unconsumed, after {%).
  Body body(std::initializer_list<const char*> ends) {
    Body out;
    while (true) {
      const Token& t = peek();
      if (t.t == T::End) {
        if (ends.size()) fail(std::string("missing {% ") + *ends.begin() + " %}");
        return out;
      }
      if (t.t == T::Text) {
        auto s = stmt(Stmt::K::Text, t.line);
        s->text = t.text;
        out.push_back(std::move(s));
        ++p_;
      } else if (t.t == T::VarBegin) {
        ++p_;
        auto s = stmt(Stmt::K::Print, line());
        s->exprs.push_back(expression());
        if (peek().t != T::VarEnd) fail("expected '}}', got '" + describe(peek()) + "'");
        ++p_;
        out.push_back(std::move(s));
      } else if (t.t == T::BlockBegin) {
        const Token& kw = peek(1);
        if (kw.t != T::Name) fail("expected a tag name after {%");
        for (const char* e : ends)
          if (kw.text == e) {
            ++p_;  // leave the keyword for the caller
            return out;
          }
        ++p_;
        out.push_back(statement());
      } else {
        fail("unexpected '" + describe(t) + "'");
      }
    }
  }

  StmtPtr statement() {
    const int ln = line();
    const std::string kw = next().text;
    auto s = stmt(Stmt::K::Text, ln);
    if (kw == "if") {
      s->k = Stmt::K::If;
      s->exprs.push_back(expression());
      expect_block_end();
      while (true) {
        s->bodies.push_back(body({"elif", "else", "endif"}));
        const std::string end = next().text;
        if (end == "elif") {
          s->exprs.push_back(expression());
          expect_block_end();
        } else if (end == "else") {
          expect_block_end();
          s->bodies.push_back(body({"endif"}));
          ++p_;
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (kw == "for") {
      s->k = Stmt::K::For;
      s->targets.push_back(expect_name());
      while (is_op(",")) {
        ++p_;
        s->targets.push_back(expect_name());
      }
      if (!is_name("in")) fail("expected 'in' in a for loop");
      ++p_;
      s->exprs.push_back(or_expr());
      s->exprs.emplace_back();
      if (is_name("if")) {
        ++p_;
        s->exprs[1] = or_expr();
      }
      if (is_name("recursive")) fail("recursive for loops are not supported");
      expect_block_end();
      s->bodies.push_back(body({"else", "endfor"}));
      if (next().text == "else") {
        expect_block_end();
        s->bodies.push_back(body({"endfor"}));
        ++p_;
      }
      expect_block_end();
    } else if (kw == "set") {
      s->targets.push_back(expect_name());
      if (is_op(".")) {
        ++p_;
        s->targets.push_back(expect_name());
        s->attr_target = true;
      } else {
        while (is_op(",")) {
          ++p_;
          s->targets.push_back(expect_name());
        }
      }
      if (is_op("=")) {
        ++p_;
        s->k = Stmt::K::Set;
        s->exprs.push_back(tuple_or_expression());
        expect_block_end();
      } else {
        if (s->targets.size() != 1 || s->attr_target) fail("a {% set %} block takes one name");
        s->k = Stmt::K::SetBlock;
        expect_block_end();
        s->bodies.push_back(body({"endset"}));
        ++p_;
        expect_block_end();
      }
    } else if (kw == "macro") {
      s->k = Stmt::K::Macro;
      s->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        s->params.push_back(expect_name());
        if (is_op("=")) {
          ++p_;
          s->exprs.push_back(expression());
        } else {
          s->exprs.emplace_back();
        }
        if (!is_op(")")) expect_op(",");
      }
      ++p_;
      expect_block_end();
      s->bodies.push_back(body({"endmacro"}));
      ++p_;
      expect_block_end();
    } else if (kw == "break" || kw == "continue") {
      s->k = kw == "break" ? Stmt::K::Break : Stmt::K::Continue;
      expect_block_end();
    } else if (kw == "with") {
      s->k = Stmt::K::With;
      while (peek().t != T::BlockEnd) {
        s->targets.push_back(expect_name());
        expect_op("=");
        s->exprs.push_back(expression());
        if (!is_op(",")) break;
        ++p_;
      }
      expect_block_end();
      s->bodies.push_back(body({"endwith"}));
      ++p_;
      expect_block_end();
    } else if (kw == "filter") {
      s->k = Stmt::K::FilterBlock;
      s->exprs.push_back(filter(nullptr));
      expect_block_end();
      s->bodies.push_back(body({"endfilter"}));
      ++p_;
      expect_block_end();
    } else if (kw == "generation") {
      s->k = Stmt::K::Scope;
      expect_block_end();
      s->bodies.push_back(body({"endgeneration"}));
      ++p_;
      expect_block_end();
    } else {
      fail("unknown or unsupported tag '" + kw + "'");
    }
    return s;
  }

  static StmtPtr stmt(Stmt::K k, int ln) {
    auto s = std::make_unique<Stmt>();
    s->k = k;
    s->line = ln;
    return s;
  }

  ExprPtr node(Expr::K k, int ln) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->line = ln;
    return e;
  }

  // `a, b` without brackets (the right side of {% set %}) is a tuple.
  ExprPtr tuple_or_expression() {
    const int ln = line();
    ExprPtr first = expression();
    if (!is_op(",")) return first;
    auto t = node(Expr::K::Tuple, ln);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      ++p_;
      if (peek().t == T::BlockEnd) break;
      t->args.push_back(expression());
    }
    return t;
  }

  ExprPtr expression() {
    const int ln = line();
    ExprPtr e = or_expr();
    while (is_name("if")) {
      ++p_;
      auto c = node(Expr::K::Cond, ln);
      c->args.push_back(or_expr());  // the condition
      c->args.push_back(std::move(e));
      if (is_name("else")) {
        ++p_;
        c->args.push_back(expression());
      } else {
        c->args.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }

  // Without the conditional: in `for x in ... if ...` the `if` belongs to the loop.
  ExprPtr or_expr() {
    ExprPtr l = and_expr();
    while (is_name("or")) {
      const int ln = line();
      ++p_;
      auto n = node(Expr::K::Or, ln);
      n->args.push_back(std::move(l));
      n->args.push_back(and_expr());
      l = std::move(n);
    }
    return l;
  }
  ExprPtr and_expr() {
    ExprPtr l = not_expr();
    while (is_name("and")) {
      const int ln = line();
      ++p_;
      auto n = node(Expr::K::And, ln);
      n->args.push_back(std::move(l));
      n->args.push_back(not_expr());
      l = std::move(n);
    }
    return l;
  }
  ExprPtr not_expr() {
    if (is_name("not")) {
      const int ln = line();
      ++p_;
      auto n = node(Expr::K::Not, ln);
      n->args.push_back(not_expr());
      return n;
    }
    return compare();
  }
  ExprPtr compare() {
    const int ln = line();
    ExprPtr first = math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (peek().t == T::Op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        ++p_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        p_ += 2;
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::K::Compare, ln);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr binary(const std::string& op, ExprPtr l, ExprPtr r, int ln) {
    auto n = node(Expr::K::Binary, ln);
    n->name = op;
    n->args.push_back(std::move(l));
    n->args.push_back(std::move(r));
    return n;
  }
  ExprPtr math1() {
    ExprPtr l = concat();
    while (is_op("+") || is_op("-")) {
      const int ln = line();
      const std::string op = next().text;
      l = binary(op, std::move(l), concat(), ln);
    }
    return l;
  }
  ExprPtr concat() {
    ExprPtr l = math2();
    while (is_op("~")) {
      const int ln = line();
      ++p_;
      l = binary("~", std::move(l), math2(), ln);
    }
    return l;
  }
  ExprPtr math2() {
    ExprPtr l = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const int ln = line();
      const std::string op = next().text;
      l = binary(op, std::move(l), power(), ln);
    }
    return l;
  }
  ExprPtr power() {
    ExprPtr l = unary(true);
    while (is_op("**")) {
      const int ln = line();
      ++p_;
      l = binary("**", std::move(l), unary(true), ln);
    }
    return l;
  }
  ExprPtr unary(bool with_filter) {
    const int ln = line();
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const bool neg = next().text == "-";
      e = node(neg ? Expr::K::Neg : Expr::K::Pos, ln);
      e->args.push_back(unary(false));
    } else {
      e = postfix(primary());
    }
    if (with_filter) e = filters_and_tests(std::move(e));
    return e;
  }

  ExprPtr primary() {
    const int ln = line();
    const Token& t = peek();
    if (t.t == T::String) {
      std::string s = next().text;
      while (peek().t == T::String) s += next().text;  // adjacent literals concatenate
      auto e = node(Expr::K::Literal, ln);
      e->value = Value::string(std::move(s));
      return e;
    }
    if (t.t == T::Int || t.t == T::Float) {
      auto e = node(Expr::K::Literal, ln);
      e->value = t.t == T::Int ? Value::integer(t.i) : Value::real(t.f);
      ++p_;
      return e;
    }
    if (t.t == T::Name) {
      const std::string n = next().text;
      auto e = node(Expr::K::Literal, ln);
      if (n == "true" || n == "True") {
        e->value = Value::boolean(true);
      } else if (n == "false" || n == "False") {
        e->value = Value::boolean(false);
      } else if (n == "none" || n == "None") {
        e->value = Value::none();
      } else {
        e->k = Expr::K::Name;
        e->name = n;
      }
      return e;
    }
    if (is_op("(")) {
      ++p_;
      if (is_op(")")) {
        ++p_;
        return node(Expr::K::Tuple, ln);
      }
      ExprPtr first = expression();
      if (is_op(")")) {
        ++p_;
        return first;
      }
      auto tup = node(Expr::K::Tuple, ln);
      tup->args.push_back(std::move(first));
      while (is_op(",")) {
        ++p_;
        if (is_op(")")) break;
        tup->args.push_back(expression());
      }
      expect_op(")");
      return tup;
    }
    if (is_op("[")) {
      ++p_;
      auto list = node(Expr::K::List, ln);
      while (!is_op("]")) {
        list->args.push_back(expression());
        if (!is_op("]")) expect_op(",");
      }
      ++p_;
      return list;
    }
    if (is_op("{")) {
      ++p_;
      auto dict = node(Expr::K::Dict, ln);
      while (!is_op("}")) {
        dict->args.push_back(expression());
        expect_op(":");
        dict->args.push_back(expression());
        if (!is_op("}")) expect_op(",");
      }
      ++p_;
      return dict;
    }
    fail("unexpected '" + describe(t) + "' in an expression");
  }

  ExprPtr postfix(ExprPtr e) {
    while (true) {
      const int ln = line();
      if (is_op(".")) {
        ++p_;
        auto a = node(Expr::K::Attr, ln);
        if (peek().t == T::Int) {  // x.0 is x[0]
          a->k = Expr::K::Item;
          a->args.push_back(std::move(e));
          auto idx = node(Expr::K::Literal, ln);
          idx->value = Value::integer(next().i);
          a->args.push_back(std::move(idx));
        } else {
          a->name = expect_name();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (is_op("[")) {
        ++p_;
        e = subscript(std::move(e), ln);
      } else if (is_op("(")) {
        auto c = node(Expr::K::Call, ln);
        c->args.push_back(std::move(e));
        call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr subscript(ExprPtr obj, int ln) {
    ExprPtr parts[3];
    int n = 0;
    bool slice = false;
    while (true) {
      if (is_op(":")) {
        slice = true;
        ++p_;
        if (++n > 2) fail("a slice takes at most three parts");
        continue;
      }
      if (is_op("]")) break;
      if (parts[n]) fail("expected ':' or ']' in a subscript");
      parts[n] = expression();
    }
    ++p_;
    if (!slice) {
      if (!parts[0]) fail("empty subscript");
      auto it = node(Expr::K::Item, ln);
      it->args.push_back(std::move(obj));
      it->args.push_back(std::move(parts[0]));
      return it;
    }
    auto s = node(Expr::K::Slice, ln);
    s->args.push_back(std::move(obj));
    for (auto& p : parts) s->args.push_back(std::move(p));
    return s;
  }

  // (a, b, key=c): appends to e.args / e.kwargs; consumes the parentheses.
  void call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().t == T::Name && is_op("=", 1)) {
        std::string key = next().text;
        ++p_;
        e.kwargs.emplace_back(std::move(key), expression());
      } else {
        if (!e.kwargs.empty()) fail("a positional argument follows a keyword argument");
        e.args.push_back(expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    ++p_;
  }

  ExprPtr filter(ExprPtr subject) {
    const int ln = line();
    auto f = node(Expr::K::Filter, ln);
    f->name = expect_name();
    if (!known_filter(f->name)) fail("no filter named '" + f->name + "'");
    f->args.push_back(std::move(subject));
    if (is_op("(")) call_args(*f);
    return f;
  }

  ExprPtr filters_and_tests(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        ++p_;
        e = filter(std::move(e));
      } else if (is_name("is")) {
        const int ln = line();
        ++p_;
        auto t = node(Expr::K::Test, ln);
        if (is_name("not")) {
          ++p_;
          t->negated = true;
        }
        t->name = expect_name();
        if (!known_test(t->name)) fail("no test named '" + t->name + "'");
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          call_args(*t);
        } else if (peek().t == T::String || peek().t == T::Int || peek().t == T::Float ||
                   (peek().t == T::Name && !is_name("and") && !is_name("or") && !is_name("else") &&
                    !is_name("if") && !is_name("in") && !is_name("not") && !is_name("is"))) {
          // `x is divisibleby 3`, `x is equalto y`: one argument without parentheses
          t->args.push_back(postfix(primary()));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t p_ = 0;
};

}  // namespace

std::unique_ptr<Template> parse(std::string_view source) {
  return Parser(tokenize(source)).run();
}

}  // namespace epwa::jinja
