// Every malformed GGUF input is an epwa::Error whose message names the file and the problem.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "epwa/gguf.hpp"
#include "gguf_bytes.hpp"

namespace epwa {
namespace {

using test::RawGguf;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string open_error(const RawGguf& r, GgufReadOptions opts = {}) {
  try {
    GgufFile::from_bytes(r.b, opts, "bad.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "<opened>";
}

#define EXPECT_BAD(raw, text) \
  EXPECT_THAT(open_error(raw), AllOf(HasSubstr("gguf bad.gguf: "), HasSubstr(text)))

// One f32 tensor "w" of 8 elements, alignment 32: the valid base most cases start from.
RawGguf valid() {
  RawGguf r;
  r.header(1, 1).kv_str("general.architecture", "llama").tensor("w", {8}, 0, 0).pad(32).zeros(32);
  return r;
}

TEST(GgufMalformed, BaseIsValid) {
  EXPECT_EQ(open_error(valid()), "<opened>");
}

TEST(GgufMalformed, Header) {
  EXPECT_BAD(RawGguf{}, "truncated header");
  RawGguf magic = valid();
  magic.b[3] = std::byte{'G'};
  EXPECT_BAD(magic, "bad magic");
  RawGguf v1;
  v1.header(0, 0, 1);
  EXPECT_BAD(v1, "GGUF version 1 (32-bit counts) is not supported");
  RawGguf v4;
  v4.header(0, 0, 4);
  EXPECT_BAD(v4, "unsupported GGUF version 4");
  RawGguf be;
  be.header(0, 0, 0x03000000u);
  EXPECT_BAD(be, "big-endian");
  RawGguf short_header;
  short_header.bytes("GGUF", 4).u32(3).u64(0);
  EXPECT_BAD(short_header, "truncated header");
}

TEST(GgufMalformed, AbsurdCounts) {
  RawGguf kv;
  kv.header(0, uint64_t{1} << 60);
  EXPECT_BAD(kv, "metadata count 1152921504606846976 is absurd");
  RawGguf t;
  t.header(1000, 0).zeros(100);
  EXPECT_BAD(t, "tensor count 1000 is absurd");
}

TEST(GgufMalformed, Strings) {
  RawGguf key;
  key.header(0, 1).u64(1000).bytes("abc", 3).zeros(20);
  EXPECT_BAD(key, "metadata key of 1000 bytes at offset 24 runs past the end");
  RawGguf val;
  val.header(0, 1).str("k").u32(8).u64(uint64_t{1} << 62).zeros(16);
  EXPECT_BAD(val, "string value of key 'k' of 4611686018427387904 bytes");
  RawGguf empty_key;
  empty_key.header(0, 1).str("").u32(4).u32(1);
  EXPECT_BAD(empty_key, "metadata key 0 is empty");
  RawGguf name;
  name.header(1, 0).u64(500).zeros(40);
  EXPECT_BAD(name, "tensor name of 500 bytes");
}

TEST(GgufMalformed, Values) {
  RawGguf type;
  type.header(0, 1).str("k").u32(13).u64(0);
  EXPECT_BAD(type, "key 'k': unknown value type 13");
  RawGguf elem;
  elem.header(0, 1).str("k").u32(9).u32(42).u64(0);
  EXPECT_BAD(elem, "key 'k': unknown array element type 42");
  RawGguf count;
  count.header(0, 1).str("k").u32(9).u32(6).u64(1000).zeros(16);
  EXPECT_BAD(count, "key 'k': array of 1000 f32 items runs past the end");
  RawGguf strings;
  strings.header(0, 1).str("k").u32(9).u32(8).u64(2).str("a").u64(99).zeros(4);
  EXPECT_BAD(strings, "string item of key 'k' of 99 bytes");
  RawGguf b;
  b.header(0, 1).str("k").u32(7).u8(2);
  EXPECT_BAD(b, "key 'k': bool value 2 is not 0 or 1");
  RawGguf barr;
  barr.header(0, 1).str("k").u32(9).u32(7).u64(3).u8(1).u8(0).u8(7);
  EXPECT_BAD(barr, "key 'k': bool item 2 is 7");
  RawGguf scalar;
  scalar.header(0, 1).str("k").u32(10).u32(1);
  EXPECT_BAD(scalar, "truncated value of key 'k'");
  RawGguf dup;
  dup.header(0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2);
  EXPECT_BAD(dup, "duplicate metadata key 'a.b'");
}

TEST(GgufMalformed, DeeplyNestedArrays) {
  RawGguf r;
  r.header(0, 1).str("k").u32(9);
  for (int i = 0; i < 40; ++i) r.u32(9).u64(1);
  r.u32(4).u64(0);
  EXPECT_BAD(r, "key 'k': arrays nested deeper than 16");
}

TEST(GgufMalformed, Alignment) {
  RawGguf type;
  type.header(0, 1).str("general.alignment").u32(10).u64(64);
  EXPECT_BAD(type, "general.alignment is u64, not u32");
  RawGguf pow2;
  pow2.header(0, 1).kv_u32("general.alignment", 48);
  EXPECT_BAD(pow2, "general.alignment 48 is not a power of two");
  RawGguf zero;
  zero.header(0, 1).kv_u32("general.alignment", 0);
  EXPECT_BAD(zero, "general.alignment 0 is not a power of two");
  // With alignment 64, offset 32 is misaligned.
  RawGguf off;
  off.header(2, 1).kv_u32("general.alignment", 64);
  off.tensor("a", {8}, 0, 0).tensor("b", {8}, 0, 32).pad(64).zeros(128);
  EXPECT_BAD(off, "tensor 'b': offset 32 is not a multiple of the alignment 64");
}

TEST(GgufMalformed, TensorInfos) {
  RawGguf dims0;
  dims0.header(1, 0).tensor("w", {}, 0, 0).zeros(64);
  EXPECT_BAD(dims0, "tensor 'w': 0 dimensions (expected 1 to 4)");
  RawGguf dims5;
  dims5.header(1, 0).tensor("w", {1, 1, 1, 1, 8}, 0, 0).pad(32).zeros(32);
  EXPECT_BAD(dims5, "tensor 'w': 5 dimensions");
  RawGguf zero;
  zero.header(1, 0).tensor("w", {8, 0}, 0, 0).pad(32).zeros(32);
  EXPECT_BAD(zero, "tensor 'w': dimension 1 is zero");
  RawGguf overflow;
  overflow.header(1, 0).tensor("w", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0).pad(32);
  EXPECT_BAD(overflow, "tensor 'w': element count overflows");
  RawGguf huge;
  huge.header(1, 0).tensor("w", {~uint64_t{0}}, 0, 0).pad(32);
  EXPECT_BAD(huge, "tensor 'w': element count overflows");
  RawGguf bytes_overflow;
  bytes_overflow.header(1, 0).tensor("w", {uint64_t{1} << 62}, 0, 0).pad(32);
  EXPECT_BAD(bytes_overflow, "tensor 'w': byte size overflows");
  RawGguf type;
  type.header(1, 0).tensor("w", {256}, 10, 0).pad(32).zeros(96);
  EXPECT_BAD(type, "tensor 'w': unsupported ggml type id 10");
  RawGguf row;
  row.header(1, 0).tensor("w", {16, 2}, 8, 0).pad(32).zeros(96);
  EXPECT_BAD(row, "tensor 'w': row length 16 is not a multiple of the q8_0 block size 32");
  RawGguf dup;
  dup.header(2, 0).tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32).pad(32).zeros(64);
  EXPECT_BAD(dup, "duplicate tensor name 'w'");
  RawGguf trunc;
  trunc.header(1, 0).str("wwwwwwwwwwww").u32(2).u64(8);
  EXPECT_BAD(trunc, "truncated dimensions of tensor 'wwwwwwwwwwww'");
}

TEST(GgufMalformed, TensorData) {
  RawGguf past;
  past.header(1, 0).tensor("w", {8}, 0, 0).pad(32).zeros(31);
  EXPECT_BAD(past, "tensor 'w' (f32 [8], 32 bytes at data offset 0) runs past the end");
  RawGguf far;
  far.header(1, 0).tensor("w", {8}, 0, uint64_t{1} << 63).pad(32).zeros(32);
  EXPECT_BAD(far, "tensor 'w' (f32 [8], 32 bytes at data offset 9223372036854775808) runs past");
  RawGguf no_data;
  no_data.header(1, 0).tensor("w", {8}, 0, 0);
  EXPECT_BAD(no_data, "tensor data section starts at 64, past the end of the file (57 bytes)");
  RawGguf overlap;
  overlap.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {8}, 0, 32).pad(32).zeros(128);
  EXPECT_BAD(overlap, "tensors 'a' and 'b' overlap");
  RawGguf same;
  same.header(2, 0).tensor("a", {8}, 0, 32).tensor("b", {8}, 0, 32).pad(32).zeros(128);
  EXPECT_BAD(same, "overlap");
  // A type edited to a smaller one (f32 [16] -> f16 [16]): its data no longer reaches the next
  // tensor, which is read from where the writer put it.
  RawGguf gap;
  gap.header(2, 0).tensor("a", {16}, 1, 0).tensor("b", {8}, 0, 64).pad(32).zeros(96);
  EXPECT_BAD(gap,
             "tensor 'a' (f16 [16], 32 bytes at data offset 0) ends 32 bytes before the next "
             "tensor 'b': its declared type or shape does not match its data");
  RawGguf last;
  last.header(2, 0).tensor("a", {8}, 0, 0).tensor("b", {16}, 1, 32).pad(32).zeros(96);
  EXPECT_BAD(last,
             "tensor 'b' (f16 [16], 32 bytes at data offset 32) is the last tensor but ends "
             "32 bytes before the end of the file");
  RawGguf late;
  late.header(1, 0).tensor("w", {8}, 0, 32).pad(32).zeros(64);
  EXPECT_BAD(late,
             "tensor 'w' (f32 [8], 32 bytes at data offset 32) is the first tensor but does "
             "not start the data section");
  RawGguf padded;  // padding after the last tensor, up to the alignment, is fine
  padded.header(2, 0).tensor("a", {8}, 0, 0).tensor("b", {4}, 0, 32).pad(32).zeros(64);
  EXPECT_EQ(open_error(padded), "<opened>");
  RawGguf unsupported_far;
  unsupported_far.header(1, 0).tensor("q", {256}, 10, 4096).pad(32).zeros(32);
  EXPECT_THAT(open_error(unsupported_far, {.allow_unsupported_types = true}),
              HasSubstr("tensor 'q': offset 4096 is past the end of the file"));
}

TEST(GgufMalformed, MissingFile) {
  try {
    GgufFile f("/nonexistent/model.gguf");
    FAIL() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/model.gguf"));
  }
}

}  // namespace
}  // namespace epwa
