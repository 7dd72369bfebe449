// Loading-mode settings: value parsing, the priority table over every combination of the EPW_*
// variables, flags over variables, the statistics block.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "epwa/error.hpp"
#include "epwa/load_options.hpp"

using namespace epwa;

namespace {
std::function<const char*(const char*)> env_of(const std::map<std::string, std::string>& m) {
  return [m](const char* name) -> const char* {
    auto it = m.find(name);
    return it == m.end() ? nullptr : it->second.c_str();
  };
}
}  // namespace

TEST(LoadSettings, ParsesBooleanValues) {
  for (const char* on : {"true", "TRUE", "True", "1", "yes", "YES", "on", "On", " on "}) {
    bool ok = false;
    EXPECT_TRUE(parse_bool_setting(on, &ok)) << on;
    EXPECT_TRUE(ok) << on;
  }
  for (const char* off : {"false", "0", "no", "off", "OFF", ""}) {
    bool ok = false;
    EXPECT_FALSE(parse_bool_setting(off, &ok)) << off;
    EXPECT_TRUE(ok) << off;
  }
  for (const char* bad : {"maybe", "2", "y", "enable", "truee"}) {
    bool ok = true;
    EXPECT_FALSE(parse_bool_setting(bad, &ok)) << bad;
    EXPECT_FALSE(ok) << bad;
  }
}

TEST(LoadSettings, PriorityTableOverEveryCombination) {
  for (int bits = 0; bits < 16; ++bits) {
    const bool b4 = bits & 1, b8 = bits & 2, fast = bits & 4, cpu = bits & 8;
    std::map<std::string, std::string> env;
    // Unset and "false" must mean the same: alternate the spelling of "off".
    auto set = [&](const char* k, bool v) {
      if (v)
        env[k] = (bits % 3 == 0) ? "yes" : "true";
      else if (bits % 2)
        env[k] = "0";
    };
    set("EPW_LOAD_IN_4BIT", b4), set("EPW_LOAD_IN_8BIT", b8), set("EPW_FAST_LOADING", fast),
        set("EPW_USE_CPU", cpu);
    const ResolvedLoad r = resolve_load({}, env_of(env));
    const LoadMode want = b4     ? LoadMode::Bits4
                          : b8   ? LoadMode::Bits8
                          : fast ? LoadMode::Fast
                                 : LoadMode::Standard;
    EXPECT_EQ(r.options.mode, want) << "combination " << bits;
    EXPECT_EQ(r.options.cpu, cpu) << "combination " << bits;
    EXPECT_TRUE(r.warnings.empty()) << "combination " << bits;
    const std::string src = b4     ? "variable EPW_LOAD_IN_4BIT"
                            : b8   ? "variable EPW_LOAD_IN_8BIT"
                            : fast ? "variable EPW_FAST_LOADING"
                                   : "default";
    EXPECT_EQ(r.sources.at("mode"), src) << "combination " << bits;
    EXPECT_EQ(r.sources.at("cpu"), env.count("EPW_USE_CPU") ? "variable EPW_USE_CPU" : "default");
  }
}

TEST(LoadSettings, FlagsWinOverVariables) {
  const auto env = env_of(
      {{"EPW_LOAD_IN_4BIT", "true"}, {"EPW_USE_CPU", "true"}, {"EPW_MODEL_PATH", "/env/model"}});
  {
    LoadFlags f;
    f.load_in_8bit = true;
    const auto r = resolve_load(f, env);
    EXPECT_EQ(r.options.mode, LoadMode::Bits8);
    EXPECT_EQ(r.sources.at("mode"), "flag --load-in-8bit");
  }
  {
    LoadFlags f;
    f.fast_loading = true;
    f.cpu = false;
    f.model = "/flag/model";
    const auto r = resolve_load(f, env);
    EXPECT_EQ(r.options.mode, LoadMode::Fast);
    EXPECT_FALSE(r.options.cpu);
    EXPECT_EQ(r.sources.at("cpu"), "flag --cpu");
    EXPECT_EQ(r.model.value(), "/flag/model");
    EXPECT_EQ(r.sources.at("model"), "flag --model");
  }
  {
    LoadFlags f;
    f.load_in_4bit = false;  // --load-in-4bit=false turns the variable's 4-bit off
    EXPECT_EQ(resolve_load(f, env).options.mode, LoadMode::Standard);
  }
  {
    LoadFlags f;
    f.load = "auto";
    f.load_in_4bit = true;
    const auto r = resolve_load(f, env);
    EXPECT_EQ(r.options.mode, LoadMode::Auto);
    EXPECT_EQ(r.sources.at("mode"), "flag --load");
  }
  {
    const auto r = resolve_load({}, env);
    EXPECT_EQ(r.options.mode, LoadMode::Bits4);
    EXPECT_TRUE(r.options.cpu);
    EXPECT_EQ(r.model.value(), "/env/model");
    EXPECT_EQ(r.sources.at("model"), "variable EPW_MODEL_PATH");
  }
  LoadFlags bad;
  bad.load = "3bit";
  EXPECT_THROW(resolve_load(bad, env), Error);
}

TEST(LoadSettings, UnrecognisedValueWarnsNamingTheVariable) {
  const auto r =
      resolve_load({}, env_of({{"EPW_LOAD_IN_8BIT", "maybe"}, {"EPW_FAST_LOADING", "on"}}));
  EXPECT_EQ(r.options.mode, LoadMode::Fast);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("EPW_LOAD_IN_8BIT"), std::string::npos) << r.warnings[0];
  EXPECT_NE(r.warnings[0].find("maybe"), std::string::npos) << r.warnings[0];
  // Replaced by a flag, the variable still gets its warning.
  LoadFlags f;
  f.load_in_4bit = true;
  EXPECT_EQ(resolve_load(f, env_of({{"EPW_USE_CPU", "sure"}})).warnings.size(), 1u);
}

TEST(LoadSettings, StatisticsBlockIsExact) {
  EXPECT_EQ(format_load_times({0.01, 1.23, 0.02, 1.26}),
            "=== Load time statistics ===\n"
            "Tokenizer: 0.01 s\n"
            "Model: 1.23 s\n"
            "Router hash: 0.02 s\n"
            "Total load time: 1.26 s\n"
            "============================\n");
}

TEST(LoadSettings, ModeNamesRoundTrip) {
  for (LoadMode m :
       {LoadMode::Standard, LoadMode::Fast, LoadMode::Bits4, LoadMode::Bits8, LoadMode::Auto})
    EXPECT_EQ(load_mode_from_name(load_mode_name(m)), m);
}
