// Chat templates rendered as transformers renders them: every template in
// tests/data/chat_templates/ against Jinja2's renders (tools/ref/chat_template_refs.py), errors
// and limits, and finding the template a model ships.
#include "epwa/chat_template.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "epwa/gguf.hpp"
#include "epwa/tokenizer.hpp"
#include "support/error_of.hpp"
#include "support/run_cli.hpp"

namespace fs = std::filesystem;
using epwa_test::error_of;
using json = nlohmann::ordered_json;

namespace {

const fs::path kDir = fs::path(EPWA_TEST_DATA_DIR) / "chat_templates";

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string render(const std::string& src, const json& messages, bool gen = true,
                   std::map<std::string, std::string> special = {}) {
  epwa::ChatInput in;
  in.messages = messages;
  in.add_generation_prompt = gen;
  return epwa::ChatTemplate(src, std::move(special)).render(in);
}

const json kHello = json::parse(R"([{"role": "user", "content": "Hello"}])");

TEST(ChatTemplate, RendersEveryTemplateAsJinja2Does) {
  const json records = json::parse(read(kDir / "expected.json"));
  ASSERT_GE(records.size(), 150u);
  int rendered = 0, refused = 0;
  for (const auto& r : records) {
    const std::string name = r["template"].get<std::string>() + "/" + r["case"].get<std::string>();
    std::map<std::string, std::string> special;
    for (const auto& [k, v] : r["special_tokens"].items()) special[k] = v.get<std::string>();
    const epwa::ChatTemplate tpl(read(kDir / (r["template"].get<std::string>() + ".jinja")),
                                 special);
    epwa::ChatInput in;
    in.messages = r["messages"];
    in.tools = r["tools"];
    in.add_generation_prompt = r["add_generation_prompt"].get<bool>();
    in.kwargs = r["kwargs"];
    if (r.contains("output")) {
      std::string got;
      EXPECT_NO_THROW(got = tpl.render(in)) << name;
      const std::string want = r["output"].get<std::string>();
      if (got != want) {  // the first differing line, not two whole renders
        size_t at = 0;
        while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
        const size_t from =
            want.rfind('\n', at) == std::string::npos ? 0 : want.rfind('\n', at) + 1;
        ADD_FAILURE() << name << ": differs at byte " << at
                      << "\n  Jinja2: " << want.substr(from, at - from + 40)
                      << "\n  ours:   " << got.substr(from, at - from + 40);
      }
      ++rendered;
    } else {
      const std::string err = error_of([&] { tpl.render(in); });
      EXPECT_FALSE(err.empty()) << name << ": Jinja2 failed (" << r["error"] << "), we rendered";
      if (r["raised"].get<bool>()) {
        EXPECT_EQ(err, "chat template refused the conversation: " + r["error"].get<std::string>())
            << name;
      }
      ++refused;
    }
  }
  EXPECT_GE(rendered, 120);
  EXPECT_GE(refused, 10);
}

TEST(ChatTemplate, SyntaxErrorsNameTheLine) {
  EXPECT_EQ(error_of([] { epwa::ChatTemplate("a\n{{ x "); }),
            "chat template: line 2: a {{ tag is not closed");
  EXPECT_EQ(error_of([] { epwa::ChatTemplate("{% if x %}yes"); }),
            "chat template: line 1: missing {% elif %}");
  EXPECT_EQ(error_of([] { epwa::ChatTemplate("{{ x | nosuch }}"); }),
            "chat template: line 1: no filter named 'nosuch'");
  EXPECT_EQ(error_of([] { epwa::ChatTemplate("\n\n{% include 'x' %}"); }),
            "chat template: line 3: unknown or unsupported tag 'include'");
  EXPECT_EQ(error_of([] { epwa::ChatTemplate("{{ 'abc }}"); }),
            "chat template: line 1: a string is not closed");
  EXPECT_EQ(error_of([] { epwa::ChatTemplate("{# note"); }),
            "chat template: line 1: a comment is not closed (missing #})");
  EXPECT_EQ(error_of([] { epwa::ChatTemplate(std::string("\xff\xfe")); }),
            "chat template: the template is not valid UTF-8");
}

TEST(ChatTemplate, RuntimeErrorsNameTheLineAndTheTemplateMessage) {
  EXPECT_EQ(error_of([] { render("\n{{ messages[0].content.nosuch.deeper }}", kHello); }),
            "chat template: line 2: 'nosuch' is undefined (reading .deeper)");
  EXPECT_EQ(error_of([] { render("{{ raise_exception('no system role') }}", kHello); }),
            "chat template refused the conversation: no system role");
  EXPECT_EQ(error_of([] { render("{{ 1 + 'a' }}", kHello); }),
            "chat template: line 1: unsupported operand type(s) for +: 'int' and 'str'");
  EXPECT_EQ(error_of([] { render("{% set x = 5 %}{% set x.y = 1 %}", kHello); }),
            "chat template: line 1: cannot set attribute 'y' on int (only on a namespace())");
  EXPECT_EQ(error_of([] { render("{{ messages.append(1) }}", kHello); }),
            "chat template: line 1: a template may not modify its input (list.append)");
}

TEST(ChatTemplate, HostileTemplatesStopAtTheLimits) {
  EXPECT_NE(error_of([] { render("{{ 'x' * 100000000 }}", kHello); }).find("64 MiB"),
            std::string::npos);
  EXPECT_NE(
      error_of([] {
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
               kHello);
      }).find("too much work"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", kHello);
            }).find("nest deeper"),
            std::string::npos);
  EXPECT_NE(error_of([] { render("{{ range(100000000)|length }}", kHello); }).find("100000 items"),
            std::string::npos);
  EXPECT_NE(
      error_of([] {
        render(
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
            "{% endfor %}",
            kHello);
      }).find("64 MiB"),
      std::string::npos);
}

// Cut real templates anywhere and corrupt bytes: every variant parses and renders, or fails with
// one Error; never a crash (run under AddressSanitizer by scripts/test.sh).
TEST(ChatTemplate, TruncatedAndCorruptedTemplatesFailCleanly) {
  std::mt19937 rng(7);
  for (const auto& entry : fs::directory_iterator(kDir)) {
    if (entry.path().extension() != ".jinja") continue;
    const std::string src = read(entry.path());
    for (size_t cut = 0; cut < src.size(); cut += 1 + src.size() / 60) {
      std::string variant = src.substr(0, cut);
      if (cut % 3 == 1 && !variant.empty())
        variant[rng() % variant.size()] = "{}%#-'\"()[]|."[rng() % 13];
      try {
        epwa::ChatInput in;
        in.messages = kHello;
        epwa::ChatTemplate(variant).render(in);
      } catch (const epwa::Error&) {
      }
    }
  }
}

TEST(ChatTemplate, WhitespaceControlMatchesJinja2) {
  // trim_blocks, lstrip_blocks, `-` and `+` (cases checked with Jinja2 3.1).
  EXPECT_EQ(render("  {% if true %}\n  x\n  {% endif %}\ny", kHello), "  x\ny");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c", kHello), "abc");
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}", kHello), "  x");
  EXPECT_EQ(render("{% if true +%}\nx{% endif %}", kHello), "\nx");
  EXPECT_EQ(render("a\n{# c #}\nb\n", kHello), "a\nb");
  EXPECT_EQ(render("{{ 'v' }}\n{{ 'w' }}", kHello), "v\nw");
  EXPECT_EQ(render("x\r\ny\r\n", kHello), "x\ny");
}

TEST(ChatTemplate, ScopesFollowJinja2) {
  // A {% set %} in a loop body lasts one iteration; namespace() carries state out.
  EXPECT_EQ(render("{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }};{% "
                   "endfor %}{{ x }}",
                   kHello),
            "01;01;01;0");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i "
                   "%}{% endfor %}{{ ns.n }}",
                   kHello),
            "3");
  EXPECT_EQ(render("{% if true %}{% set y = 5 %}{% endif %}{{ y }}", kHello), "5");
}

TEST(ChatTemplate, SpecialTokensAndKwargsReachTheTemplate) {
  epwa::ChatInput in;
  in.messages = kHello;
  in.kwargs = json::parse(R"({"enable_thinking": false})");
  const epwa::ChatTemplate t(
      "{{ bos_token }}|{{ eos_token }}|{{ enable_thinking }}|{{ tools is none }}",
      {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  EXPECT_EQ(t.render(in), "<s>|</s>|False|True");
}

TEST(ChatMessages, NormalizedAndCheckedAsOpenAIClientsSendThem) {
  const json m = json::parse(R"([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                             {"type": "text", "text": "b"}]},
                                  {"role": "assistant", "content": null, "tool_calls": []}])");
  const json n = epwa::normalize_chat_messages(m);
  EXPECT_EQ(n[0]["content"], "ab");
  EXPECT_TRUE(n[1]["content"].is_null());
  EXPECT_TRUE(n[1].contains("tool_calls"));
  EXPECT_EQ(error_of([] { epwa::normalize_chat_messages(json::array()); }),
            "messages must not be empty");
  EXPECT_EQ(error_of([] { epwa::normalize_chat_messages(json::parse(R"([{"content": "x"}])")); }),
            "messages[0].role must be a string");
  EXPECT_EQ(
      error_of([] {
        epwa::normalize_chat_messages(json::parse(
            R"([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])"));
      }),
      "messages[0].content[0] must be a text part ({\"type\": \"text\", \"text\": ...}); other "
      "parts are not supported");
  EXPECT_EQ(error_of([] {
              epwa::normalize_chat_messages(json::parse(R"([{"role": "user", "content": 5}])"));
            }),
            "messages[0].content must be a string, null or an array of text parts");
}

TEST(ChatTemplateFile, FoundInTokenizerConfigJinjaFileOrGguf) {
  const fs::path d = fs::temp_directory_path() / "epwa_chat_find";
  fs::remove_all(d);
  fs::create_directories(d);
  EXPECT_FALSE(epwa::find_chat_template(d).has_value());
  std::ofstream(d / "tokenizer_config.json") << R"({"chat_template": "A{{ x }}"})";
  EXPECT_EQ(epwa::find_chat_template(d).value(), "A{{ x }}");
  std::ofstream(d / "tokenizer_config.json")
      << R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})";
  EXPECT_EQ(epwa::find_chat_template(d).value(), "D");
  std::ofstream(d / "chat_template.jinja") << "J";
  EXPECT_EQ(epwa::find_chat_template(d).value(), "J");
  fs::remove(d / "chat_template.jinja");
  std::ofstream(d / "tokenizer_config.json") << R"({"chat_template": 5})";
  EXPECT_NE(error_of([&] { epwa::find_chat_template(d); }).find("neither a string nor a list"),
            std::string::npos);
  std::ofstream(d / "tokenizer_config.json") << "{oops";
  EXPECT_NE(error_of([&] { epwa::find_chat_template(d); }).find("not valid JSON"),
            std::string::npos);

  epwa::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.chat_template", "G{{ bos_token }}");
  w.write(d / "t.gguf");
  EXPECT_EQ(epwa::find_chat_template(d / "t.gguf").value(), "G{{ bos_token }}");
  fs::remove_all(d);
}

}  // namespace

namespace {

TEST(ChatTemplateCli, PrintsTheRenderingAndRefusesAModelWithoutATemplate) {
  const fs::path d = fs::temp_directory_path() / "epwa_chat_cli";
  fs::create_directories(d);
  std::ofstream(d / "m.json") << R"({"messages": [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "Hi"}]})";
  const auto r =
      epwa_test::run_cli("chat-template --messages " + (d / "m.json").string() + " --template " +
                         (kDir / "mixtral-8x7b-instruct.jinja").string());
  EXPECT_EQ(r.code, 0);
  // The bundled model's tokenizer supplies <s>.
  EXPECT_EQ(r.out, "<s> [INST] Be brief.\n\nHi [/INST]");
  const auto none = epwa_test::run_cli("chat-template --messages " + (d / "m.json").string());
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.out.find("has no chat template"), std::string::npos) << none.out;
  const auto refused = epwa_test::run_cli("chat-template --messages " + (d / "m.json").string() +
                                          " --template " + (kDir / "gemma-2-it.jinja").string());
  EXPECT_EQ(refused.code, 2);
  EXPECT_EQ(refused.out,
            "epwa: error: chat template refused the conversation: System role not supported\n");
  fs::remove_all(d);
}

}  // namespace

namespace {

// The token that ends an assistant turn, read off the template: ChatML's <|im_end|> for Qwen,
// </s> (the EOS) for Mixtral; none for a template that writes plain text there.
TEST(ChatTemplate, EndOfTurnTokenIsWhatTheTemplateWritesAfterAnAnswer) {
  const auto qwen_tok =
      epwa::load_hf_tokenizer(fs::path(EPWA_TEST_DATA_DIR) / "tokenizers" / "qwen_bl.json");
  const epwa::ChatTemplate qwen(read(kDir / "qwen3.jinja"), epwa::special_token_strings(*qwen_tok));
  EXPECT_EQ(epwa::end_of_turn_tokens(qwen, *qwen_tok),
            std::vector<int32_t>{qwen_tok->piece_to_id("<|im_end|>").value()});
  const auto llama_tok =
      epwa::load_hf_tokenizer(fs::path(EPWA_TEST_DATA_DIR) / "tokenizers" / "llama_bpe_meta.json");
  const epwa::ChatTemplate mixtral(read(kDir / "mixtral-8x7b-instruct.jinja"),
                                   epwa::special_token_strings(*llama_tok));
  EXPECT_EQ(epwa::end_of_turn_tokens(mixtral, *llama_tok),
            std::vector<int32_t>{llama_tok->piece_to_id("</s>").value()});
  const epwa::ChatTemplate plain(
      "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}");
  EXPECT_TRUE(epwa::end_of_turn_tokens(plain, *llama_tok).empty());
}

}  // namespace
