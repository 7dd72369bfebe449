// The generation loop on the bundled model: suppressed tokens are never sampled, and the token ids
// kept out of text are the tokenizer's special ones.
#include "epwa/generate.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "bundled.hpp"
#include "epwa/error.hpp"

namespace {

TEST(Generate, SuppressedTokensAreNeverSampled) {
  epwa::Model& m = bundled::model();
  const auto prompt = bundled::tokenizer().encode("The river", true, false);
  epwa::GenerateOptions o;
  o.max_new_tokens = 8;
  const auto greedy = epwa::generate(m, prompt, o);
  ASSERT_FALSE(greedy.empty());
  // The greedy choices themselves, suppressed: none of them can come out any more.
  o.suppress_tokens = greedy;
  const auto other = epwa::generate(m, prompt, o);
  for (int32_t t : other) EXPECT_EQ(std::find(greedy.begin(), greedy.end(), t), greedy.end()) << t;
  o.suppress_tokens = {m.config().vocab_size};
  EXPECT_THROW(epwa::generate(m, prompt, o), epwa::Error);
}

TEST(Generate, NonTextTokensAreTheSpecialOnes) {
  const epwa::Tokenizer& tok = bundled::tokenizer();
  const auto ids = epwa::non_text_token_ids(tok, tok.vocab_size() + 2);
  for (int32_t id :
       {tok.unk_id(), tok.bos_id(), tok.eos_id(), tok.vocab_size(), tok.vocab_size() + 1})
    EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << id;
  const int32_t the = tok.encode("the", false, false).back();
  EXPECT_EQ(std::find(ids.begin(), ids.end(), the), ids.end());
  EXPECT_LT(ids.size(), 16u);
}

// A continuation keeps its leading space: prompt text + continuation text is the text of all ids.
TEST(Generate, ContinuationTextKeepsItsLeadingSpace) {
  const epwa::Tokenizer& tok = bundled::tokenizer();
  const auto prompt = tok.encode("The river", true, false);
  const auto rest = tok.encode("is called the Nile", false, false);
  EXPECT_EQ(tok.decode(rest, true), "is called the Nile");
  EXPECT_EQ(tok.decode_continuation(rest, true), " is called the Nile");
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), rest.begin(), rest.end());
  EXPECT_EQ(tok.decode(prompt, true) + tok.decode_continuation(rest, true), tok.decode(all, true));
}

}  // namespace
