// Renders a parsed chat template with the given top-level variables (messages, tools,
// add_generation_prompt, special tokens, ...).
#pragma once
#include <string>

#include "chat/ast.hpp"

namespace epwa::jinja {

// Throws Error "line N: ..." on a runtime error (undefined attribute access, bad operand types,
// limits: 64 MiB of output, 2M evaluation steps, 200 nested macro calls) and TemplateRaised when
// the template calls raise_exception().
std::string render(const Template& tpl, const Dict& context);

}  // namespace epwa::jinja
