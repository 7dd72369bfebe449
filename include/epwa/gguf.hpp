// GGUF (llama.cpp's model file format, versions 2 and 3, little-endian): a memory-mapped reader
// with strict validation and a streaming writer. docs/GGUF.md lists the format facts and the naming
// conventions for llama-architecture MoE models.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

// Metadata value types; the numbers are GGUF's on-disk ids and also the index of the matching
// alternative in GgufValue and GgufArray::Items.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType t);  // "u8", "string", "array", ...

// A typed array. Items are kept as one vector of the element type (not a vector of variants), so
// 150k vocabulary strings or scores cost no more than the strings or floats themselves. Arrays of
// arrays hold a vector of GgufArray, each with its own element type.
struct GgufArray {
  using Items = std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
                             std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>,
                             std::vector<float>, std::vector<bool>, std::vector<std::string>,
                             std::vector<GgufArray>, std::vector<uint64_t>, std::vector<int64_t>,
                             std::vector<double>>;
  Items items;

  GgufArray() = default;
  template <class T>
  GgufArray(std::vector<T> v) : items(std::move(v)) {}

  GgufType type() const { return static_cast<GgufType>(items.index()); }  // element type
  size_t size() const;

  // The items as a vector of T; throws Error naming both types when the element type differs.
  template <class T>
  const std::vector<T>& as() const;
  const std::vector<std::string>& strings() const { return as<std::string>(); }

  bool operator==(const GgufArray&) const = default;
};

using GgufValue = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, GgufArray, uint64_t, int64_t, double>;
inline GgufType gguf_type_of(const GgufValue& v) {
  return static_cast<GgufType>(v.index());
}

struct GgufKV {
  std::string key;
  GgufValue value;
};

template <class T>
const std::vector<T>& GgufArray::as() const {
  if (const auto* p = std::get_if<std::vector<T>>(&items)) return *p;
  const GgufType want = static_cast<GgufType>(Items(std::vector<T>{}).index());
  throw Error("gguf array holds " + std::string(gguf_type_name(type())) + " items, not " +
              std::string(gguf_type_name(want)));
}

// ggml tensor type ids of the DTypes (F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q4_K
// 12, Q5_K 13, Q6_K 14, BF16 30, MXFP4 39); dtype_from_ggml_type returns nullopt for any other id.
uint32_t ggml_type_of(DType t);
std::optional<DType> dtype_from_ggml_type(uint32_t ggml_type);

struct GgufReadOptions {
  // false: a tensor of a ggml type with no DType is an Error at open, naming tensor and type id.
  // true: such tensors are listed in unsupported_tensors() instead (only their offset is checked),
  // so that metadata (a vocabulary, say) can be read from any llama.cpp file.
  bool allow_unsupported_types = false;
};

struct GgufUnsupportedTensor {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<int64_t> shape;  // row-major
};

// A parsed GGUF file. Tensor views point into the mapping (or the owned buffer) and stay valid for
// the lifetime of this object, moves included. Every malformed input is an Error naming the file
// and the problem.
class GgufFile {
 public:
  explicit GgufFile(const std::filesystem::path& path, GgufReadOptions opts = {});
  // Parses an in-memory copy of a file; `name` stands for the path in error messages.
  static GgufFile from_bytes(std::vector<std::byte> bytes, GgufReadOptions opts = {},
                             std::string name = "<memory>");

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the tensor data section

  // Metadata in file order.
  const std::vector<GgufKV>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;  // nullptr when absent
  const GgufValue& get(std::string_view key) const;   // throws Error naming a missing key

  // Integer getters accept any integer type whose value fits (GGUF writers differ between u32 and
  // u64 for counts); float getters accept F32 and F64. Errors name the key, the type and the value.
  uint32_t get_u32(std::string_view key) const;
  int32_t get_i32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;
  double get_f64(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;
  const GgufArray& get_array(std::string_view key) const;
  // The same, nullopt when the key is absent (still an Error when present with a wrong type).
  std::optional<uint32_t> find_u32(std::string_view key) const;
  std::optional<int32_t> find_i32(std::string_view key) const;
  std::optional<uint64_t> find_u64(std::string_view key) const;
  std::optional<int64_t> find_i64(std::string_view key) const;
  std::optional<float> find_f32(std::string_view key) const;
  std::optional<double> find_f64(std::string_view key) const;
  std::optional<bool> find_bool(std::string_view key) const;
  const std::string* find_string(std::string_view key) const;
  const GgufArray* find_array(std::string_view key) const;

  // Tensors in file order; shapes are row-major (GGUF's ne[] reversed).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const;
  const TensorView& tensor(std::string_view name) const;  // throws Error naming a missing tensor
  const std::vector<GgufUnsupportedTensor>& unsupported_tensors() const { return unsupported_; }

 private:
  GgufFile() = default;
  void parse(GgufReadOptions opts);

  std::string name_;
  MappedFile map_;
  std::vector<std::byte> owned_;
  std::span<const std::byte> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKV> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  std::vector<GgufUnsupportedTensor> unsupported_;
};

// Builds a GGUF v3 file. Metadata keeps insertion order (setting a key again replaces its value in
// place). Tensor data is written in insertion order at offsets aligned to the file's alignment and
// is never gathered in memory as a whole: each tensor's bytes come from a span or a producer at
// write() time, so a converter can stream a model of any size.
class GgufWriter {
 public:
  // Called by a producer with consecutive chunks of the tensor's bytes.
  using Emit = std::function<void(std::span<const std::byte>)>;
  // Writes one tensor at write() time by calling `emit` any number of times; the chunk sizes must
  // add up to the tensor's byte size (checked).
  using Producer = std::function<void(const Emit& emit)>;

  void set(std::string key, GgufValue value);
  void set_u32(std::string key, uint32_t v) { set(std::move(key), GgufValue{v}); }
  void set_i32(std::string key, int32_t v) { set(std::move(key), GgufValue{v}); }
  void set_u64(std::string key, uint64_t v) { set(std::move(key), GgufValue{v}); }
  void set_f32(std::string key, float v) { set(std::move(key), GgufValue{v}); }
  void set_bool(std::string key, bool v) { set(std::move(key), GgufValue{v}); }
  void set_string(std::string key, std::string v) { set(std::move(key), GgufValue{std::move(v)}); }
  void set_array(std::string key, GgufArray v) { set(std::move(key), GgufValue{std::move(v)}); }
  // Sets general.alignment (u32); must be a power of two and a multiple of 8. Default 32, not
  // written unless set.
  void set_alignment(uint32_t alignment);
  uint32_t alignment() const { return alignment_; }
  const std::vector<GgufKV>& metadata() const { return kv_; }

  // `shape` is row-major (written to the file reversed, as ne[]); 1 to 4 dimensions, each >= 1,
  // the innermost a multiple of the dtype's block size. Names must be unique and at most 63 bytes
  // (llama.cpp's limit).
  // Borrowed bytes: `data` must stay valid until write() returns (a mapping of the source file).
  void add_tensor(std::string name, DType dtype, std::vector<int64_t> shape,
                  std::span<const std::byte> data);
  // Owned bytes: copied now (small tensors, tests).
  void add_tensor_copy(std::string name, DType dtype, std::vector<int64_t> shape,
                       std::span<const std::byte> data);
  // Produced bytes: `producer` runs during write() (conversions of big tensors, one at a time).
  void add_tensor(std::string name, DType dtype, std::vector<int64_t> shape, Producer producer);
  size_t tensor_count() const { return tensors_.size(); }

  // Writes the file (via `path` + ".tmp", renamed at the end so that a failed write leaves no
  // partial file at `path`). Throws Error naming the path or the tensor. May be called again.
  void write(const std::filesystem::path& path) const;

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t nbytes;
    Producer producer;
  };
  // Validates name and shape; returns the byte size.
  uint64_t check_tensor(const std::string& name, DType dtype,
                        const std::vector<int64_t>& shape) const;
  void add_pending(std::string name, DType dtype, std::vector<int64_t> shape, uint64_t nbytes,
                   Producer producer);

  std::vector<GgufKV> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<Pending> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  uint32_t alignment_ = 32;
};

}  // namespace epwa
