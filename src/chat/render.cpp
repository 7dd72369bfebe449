// The interpreter: statements write into one output string; each for-loop iteration, macro call
// and {% with %} gets its own scope (Jinja2: a {% set %} inside a loop does not outlive the
// iteration, which is why templates use namespace()).
#include "chat/render.hpp"

#include <unordered_map>

#include "chat/builtins.hpp"
#include "epwa/error.hpp"

namespace epwa::jinja {
namespace {

struct Frame {
  std::unordered_map<std::string, Value> vars;
  Frame* parent = nullptr;
};

// An error already prefixed with its line (so outer nodes do not prefix it again).
class Located : public Error {
 public:
  using Error::Error;
};

constexpr int kMaxDepth = 200;           // nested macro calls
constexpr size_t kMaxSteps = 2'000'000;  // statements + expressions evaluated

class Renderer {
 public:
  Renderer(Frame* top, std::string* out) : frame_(top), out_(out) {}

  enum class Flow { Normal, Break, Continue };

  Flow exec(const Body& body) {
    for (const auto& s : body) {
      const Flow f = exec_located(*s);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Value eval(const Expr& e) {
    try {
      return eval_expr(e);
    } catch (const Located&) {
      throw;
    } catch (const TemplateRaised&) {
      throw;
    } catch (const Error& err) {
      throw Located("line " + std::to_string(e.line) + ": " + err.what());
    }
  }

 private:
  void step() {
    if (++steps_ > kMaxSteps) throw Error("the template does too much work (over 2M steps)");
  }
  void emit(const std::string& s) {
    if (out_->size() + s.size() > kMaxStringBytes)
      throw Error("the rendered text would exceed 64 MiB");
    *out_ += s;
  }

  Flow exec_located(const Stmt& s) {
    try {
      return exec_stmt(s);
    } catch (const Located&) {
      throw;
    } catch (const TemplateRaised&) {
      throw;
    } catch (const Error& err) {
      throw Located("line " + std::to_string(s.line) + ": " + err.what());
    }
  }

  Value lookup(const std::string& name) const {
    for (Frame* f = frame_; f; f = f->parent) {
      auto it = f->vars.find(name);
      if (it != f->vars.end()) return it->second;
    }
    return Value::undefined(name);
  }

  void assign(const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) {
      frame_->vars[targets[0]] = v;
      return;
    }
    if (!v.is_list() && !v.is_string())
      throw Error("cannot unpack " + type_name(v) + " into " + std::to_string(targets.size()) +
                  " names");
    const List items = iterate(v);
    if (items.size() != targets.size())
      throw Error("cannot unpack " + std::to_string(items.size()) + " values into " +
                  std::to_string(targets.size()) + " names");
    for (size_t k = 0; k < targets.size(); ++k) frame_->vars[targets[k]] = items[k];
  }

  // Runs `body` in a new scope whose parent is the current one; restores the scope after.
  Flow scoped(const Body& body, Frame& f) {
    f.parent = frame_;
    Frame* saved = frame_;
    frame_ = &f;
    try {
      const Flow r = exec(body);
      frame_ = saved;
      return r;
    } catch (...) {
      frame_ = saved;
      throw;
    }
  }

  std::string capture(const Body& body, Frame* scope = nullptr) {
    std::string buf;
    std::string* saved = out_;
    out_ = &buf;
    try {
      Frame f;
      if (scope)
        scoped(body, *scope);
      else
        scoped(body, f);
      out_ = saved;
    } catch (...) {
      out_ = saved;
      throw;
    }
    return buf;
  }

  Flow exec_stmt(const Stmt& s) {
    step();
    switch (s.k) {
      case Stmt::K::Text:
        emit(s.text);
        return Flow::Normal;
      case Stmt::K::Print:
        emit(to_str(eval(*s.exprs[0])));
        return Flow::Normal;
      case Stmt::K::If:
        for (size_t k = 0; k < s.exprs.size(); ++k)
          if (truthy(eval(*s.exprs[k]))) return exec(s.bodies[k]);
        if (s.bodies.size() > s.exprs.size()) return exec(s.bodies.back());
        return Flow::Normal;
      case Stmt::K::For:
        return exec_for(s);
      case Stmt::K::Set: {
        const Value v = eval(*s.exprs[0]);
        if (s.attr_target) {
          const Value ns = lookup(s.targets[0]);
          if (ns.kind != Value::Kind::Namespace)
            throw Error("cannot set attribute '" + s.targets[1] + "' on " + type_name(ns) +
                        " (only on a namespace())");
          (*ns.ns)[s.targets[1]] = v;
        } else {
          assign(s.targets, v);
        }
        return Flow::Normal;
      }
      case Stmt::K::SetBlock:
        frame_->vars[s.targets[0]] = Value::string(capture(s.bodies[0]));
        return Flow::Normal;
      case Stmt::K::Macro:
        frame_->vars[s.text] = make_macro(s);
        return Flow::Normal;
      case Stmt::K::Break:
        return Flow::Break;
      case Stmt::K::Continue:
        return Flow::Continue;
      case Stmt::K::With: {
        Frame f;
        f.parent = frame_;
        for (size_t k = 0; k < s.targets.size(); ++k) f.vars[s.targets[k]] = eval(*s.exprs[k]);
        return scoped(s.bodies[0], f);
      }
      case Stmt::K::FilterBlock: {
        const Expr& fe = *s.exprs[0];
        Value text = Value::string(capture(s.bodies[0]));
        Args args = eval_args(fe, 1);
        emit(to_str(call_filter(fe.name, text, args)));
        return Flow::Normal;
      }
      case Stmt::K::Scope:
        return exec(s.bodies[0]);
    }
    return Flow::Normal;
  }

  Flow exec_for(const Stmt& s) {
    const Value seq = eval(*s.exprs[0]);
    if (seq.is_none() || seq.kind == Value::Kind::Bool || seq.is_number() ||
        seq.kind == Value::Kind::Callable || seq.kind == Value::Kind::Namespace)
      throw Error("'" + type_name(seq) + "' object is not iterable");
    List items = iterate(seq);
    if (s.exprs[1]) {  // the loop's filter sees the item but not `loop`
      List kept;
      for (const Value& it : items) {
        Frame f;
        f.parent = frame_;
        Frame* saved = frame_;
        frame_ = &f;
        try {
          assign(s.targets, it);
          const bool keep = truthy(eval(*s.exprs[1]));
          frame_ = saved;
          if (keep) kept.push_back(it);
        } catch (...) {
          frame_ = saved;
          throw;
        }
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (s.bodies.size() > 1) return exec(s.bodies[1]);
      return Flow::Normal;
    }
    const int64_t n = int64_t(items.size());
    for (int64_t k = 0; k < n; ++k) {
      step();  // an empty body still costs its iterations
      Frame f;
      f.parent = frame_;
      Frame* saved = frame_;
      frame_ = &f;
      Flow r;
      try {
        assign(s.targets, items[k]);
        f.vars["loop"] = loop_object(items, k);
        r = exec(s.bodies[0]);
        frame_ = saved;
      } catch (...) {
        frame_ = saved;
        throw;
      }
      if (r == Flow::Break) break;
    }
    return Flow::Normal;
  }

  static Value loop_object(const List& items, int64_t k) {
    const int64_t n = int64_t(items.size());
    Dict d;
    d.emplace_back("index", Value::integer(k + 1));
    d.emplace_back("index0", Value::integer(k));
    d.emplace_back("revindex", Value::integer(n - k));
    d.emplace_back("revindex0", Value::integer(n - k - 1));
    d.emplace_back("first", Value::boolean(k == 0));
    d.emplace_back("last", Value::boolean(k == n - 1));
    d.emplace_back("length", Value::integer(n));
    d.emplace_back("depth", Value::integer(1));
    d.emplace_back("depth0", Value::integer(0));
    d.emplace_back("previtem", k > 0 ? items[k - 1] : Value::undefined("previtem"));
    d.emplace_back("nextitem", k + 1 < n ? items[k + 1] : Value::undefined("nextitem"));
    d.emplace_back("cycle", Value::callable([k](Args& a) {
                     if (a.positional.empty()) throw Error("loop.cycle() needs at least one value");
                     return a.positional[size_t(k) % a.positional.size()];
                   }));
    return Value::make_dict(std::move(d));
  }

  Value make_macro(const Stmt& s) {
    Frame* defined_in = frame_;
    const Stmt* def = &s;
    return Value::callable([this, def, defined_in](Args& a) {
      if (++depth_ > kMaxDepth) throw Error("macros nest deeper than 200 calls");
      struct Unnest {
        int& d;
        ~Unnest() { --d; }
      } unnest{depth_};
      Frame f;
      if (a.positional.size() > def->params.size())
        throw Error("macro '" + def->text + "' takes " + std::to_string(def->params.size()) +
                    " arguments, got " + std::to_string(a.positional.size()));
      std::vector<bool> bound(def->params.size(), false);
      for (size_t k = 0; k < a.positional.size(); ++k) {
        f.vars[def->params[k]] = a.positional[k];
        bound[k] = true;
      }
      for (auto& [key, v] : a.keyword) {
        size_t k = 0;
        while (k < def->params.size() && def->params[k] != key) ++k;
        if (k == def->params.size())
          throw Error("macro '" + def->text + "' has no argument '" + key + "'");
        f.vars[key] = v;
        bound[k] = true;
      }
      Frame* saved = frame_;
      frame_ = defined_in;
      try {
        for (size_t k = 0; k < def->params.size(); ++k)
          if (!bound[k])
            f.vars[def->params[k]] =
                def->exprs[k] ? eval(*def->exprs[k]) : Value::undefined(def->params[k]);
        std::string text = capture(def->bodies[0], &f);
        frame_ = saved;
        return Value::string(std::move(text));
      } catch (...) {
        frame_ = saved;
        throw;
      }
    });
  }

  Args eval_args(const Expr& e, size_t first) {
    Args a;
    for (size_t k = first; k < e.args.size(); ++k) a.positional.push_back(eval(*e.args[k]));
    for (const auto& [key, x] : e.kwargs) a.keyword.emplace_back(key, eval(*x));
    return a;
  }

  Value eval_expr(const Expr& e) {
    step();
    switch (e.k) {
      case Expr::K::Literal:
        return e.value;
      case Expr::K::Name:
        return lookup(e.name);
      case Expr::K::Attr:
        return get_attr(eval(*e.args[0]), e.name);
      case Expr::K::Item:
        return get_item(eval(*e.args[0]), eval(*e.args[1]));
      case Expr::K::Slice: {
        Value parts[3];
        for (size_t k = 0; k < 3; ++k)
          parts[k] = e.args[k + 1] ? eval(*e.args[k + 1]) : Value::none();
        return slice(eval(*e.args[0]), parts[0], parts[1], parts[2]);
      }
      case Expr::K::Call: {
        const Value callee = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        if (callee.is_undefined())
          throw Error("'" + (callee.s.empty() ? std::string("value") : callee.s) +
                      "' is undefined (called as a function)");
        if (callee.kind != Value::Kind::Callable)
          throw Error("'" + type_name(callee) + "' object is not callable");
        return (*callee.fn)(a);
      }
      case Expr::K::Filter: {
        const Value subject = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        return call_filter(e.name, subject, a);
      }
      case Expr::K::Test: {
        const Value subject = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        return Value::boolean(call_test(e.name, subject, a) != e.negated);
      }
      case Expr::K::Neg:
      case Expr::K::Pos: {
        const Value v = eval(*e.args[0]);
        if (!v.is_number()) throw Error("bad operand type for unary -: '" + type_name(v) + "'");
        if (e.k == Expr::K::Pos) return v.kind == Value::Kind::Bool ? Value::integer(v.b) : v;
        if (v.kind == Value::Kind::Float) return Value::real(-v.f);  // keeps -0.0
        return arithmetic("-", Value::integer(0), v);
      }
      case Expr::K::Not:
        return Value::boolean(!truthy(eval(*e.args[0])));
      case Expr::K::Binary: {
        const Value a = eval(*e.args[0]);
        const Value b = eval(*e.args[1]);
        if (e.name == "~") return Value::string(to_str(a) + to_str(b));
        return arithmetic(e.name, a, b);
      }
      case Expr::K::Compare: {
        Value left = eval(*e.args[0]);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1]);
          const std::string& op = e.ops[k];
          bool r;
          if (op == "==")
            r = equals(left, right);
          else if (op == "!=")
            r = !equals(left, right);
          else if (op == "<")
            r = less(left, right);
          else if (op == ">")
            r = less(right, left);
          else if (op == "<=")
            r = !less(right, left);
          else if (op == ">=")
            r = !less(left, right);
          else if (op == "in")
            r = contains(right, left);
          else
            r = !contains(right, left);
          if (!r) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::K::And: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? eval(*e.args[1]) : a;
      }
      case Expr::K::Or: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? a : eval(*e.args[1]);
      }
      case Expr::K::Cond:
        if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined();
      case Expr::K::List:
      case Expr::K::Tuple: {
        List items;
        for (const auto& x : e.args) items.push_back(eval(*x));
        return Value::make_list(std::move(items), e.k == Expr::K::Tuple);
      }
      case Expr::K::Dict: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          const Value key = eval(*e.args[k]);
          if (!key.is_string()) throw Error("dict keys in a template must be strings");
          Value v = eval(*e.args[k + 1]);
          bool replaced = false;
          for (auto& [dk, dv] : d)
            if (dk == key.s) {
              dv = v;
              replaced = true;
            }
          if (!replaced) d.emplace_back(key.s, std::move(v));
        }
        return Value::make_dict(std::move(d));
      }
    }
    return Value::undefined();
  }

  Frame* frame_;
  std::string* out_;
  size_t steps_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string render(const Template& tpl, const Dict& context) {
  Frame builtins;
  builtins.vars = globals();
  Frame top;
  top.parent = &builtins;
  for (const auto& [k, v] : context) top.vars[k] = v;
  std::string out;
  Renderer r(&top, &out);
  r.exec(tpl.body);
  return out;
}

}  // namespace epwa::jinja
