// GGUF reader: parses the header, metadata and tensor infos of a mapped file and validates every
// count, length, offset and size against the file before any view is handed out.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "epwa/gguf.hpp"
#include "epwa/platform.hpp"

namespace epwa {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 16;  // nested arrays; bounds the recursion on hostile input
constexpr uint64_t kMaxKeyBytes = 65535;

// Smallest encoded size of one value of each type (a string is at least its length, an array its
// element type and count), used to reject counts that cannot fit in the rest of the file.
constexpr uint64_t kMinValueBytes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};

class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& name) : b_(bytes), name_(name) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error("gguf " + name_ + ": " + what);
  }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return b_.size() - pos_; }
  const std::byte* here() const { return b_.data() + pos_; }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining())
      fail("truncated " + std::string(what) + " at offset " + std::to_string(pos_) + " (needs " +
           std::to_string(n) + " bytes, " + std::to_string(remaining()) + " left)");
  }
  void skip(uint64_t n) { pos_ += n; }

  template <class T>
  T scalar(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, here(), sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(std::string_view what) {
    const uint64_t n = scalar<uint64_t>(what);
    if (n > remaining())
      fail(std::string(what) + " of " + std::to_string(n) + " bytes at offset " +
           std::to_string(pos_ - 8) + " runs past the end of the file");
    std::string s(reinterpret_cast<const char*>(here()), n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> b_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

template <size_t I>
using Alt = std::variant_alternative_t<I, GgufValue>;

GgufArray read_array(Cursor& c, const std::string& key, int depth);

template <size_t I>
GgufValue read_scalar_at(Cursor& c, const std::string& key) {
  if constexpr (std::is_same_v<Alt<I>, bool>) {
    const auto v = c.scalar<uint8_t>("bool value");
    if (v > 1) c.fail("key '" + key + "': bool value " + std::to_string(v) + " is not 0 or 1");
    return GgufValue{std::in_place_index<I>, v == 1};
  } else {
    return GgufValue{std::in_place_index<I>, c.scalar<Alt<I>>("value of key '" + key + "'")};
  }
}

GgufValue read_value(Cursor& c, uint32_t type, const std::string& key, int depth) {
  switch (type) {
    case 0:
      return read_scalar_at<0>(c, key);
    case 1:
      return read_scalar_at<1>(c, key);
    case 2:
      return read_scalar_at<2>(c, key);
    case 3:
      return read_scalar_at<3>(c, key);
    case 4:
      return read_scalar_at<4>(c, key);
    case 5:
      return read_scalar_at<5>(c, key);
    case 6:
      return read_scalar_at<6>(c, key);
    case 7:
      return read_scalar_at<7>(c, key);
    case 8:
      return GgufValue{c.string("string value of key '" + key + "'")};
    case 9:
      return GgufValue{read_array(c, key, depth + 1)};
    case 10:
      return read_scalar_at<10>(c, key);
    case 11:
      return read_scalar_at<11>(c, key);
    case 12:
      return read_scalar_at<12>(c, key);
    default:
      c.fail("key '" + key + "': unknown value type " + std::to_string(type));
  }
}

// Numeric arrays are copied in one block: the file is little-endian like the host.
template <class T>
std::vector<T> read_numbers(Cursor& c, uint64_t n) {
  std::vector<T> v(n);
  if (n) std::memcpy(v.data(), c.here(), n * sizeof(T));
  c.skip(n * sizeof(T));
  return v;
}

GgufArray read_array(Cursor& c, const std::string& key, int depth) {
  if (depth > kMaxArrayDepth)
    c.fail("key '" + key + "': arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  const auto type = c.scalar<uint32_t>("array element type of key '" + key + "'");
  if (type > 12) c.fail("key '" + key + "': unknown array element type " + std::to_string(type));
  const auto n = c.scalar<uint64_t>("array length of key '" + key + "'");
  if (n > c.remaining() / kMinValueBytes[type])
    c.fail("key '" + key + "': array of " + std::to_string(n) + " " +
           std::string(gguf_type_name(static_cast<GgufType>(type))) +
           " items runs past the end of the file");
  switch (type) {
    case 0:
      return read_numbers<uint8_t>(c, n);
    case 1:
      return read_numbers<int8_t>(c, n);
    case 2:
      return read_numbers<uint16_t>(c, n);
    case 3:
      return read_numbers<int16_t>(c, n);
    case 4:
      return read_numbers<uint32_t>(c, n);
    case 5:
      return read_numbers<int32_t>(c, n);
    case 6:
      return read_numbers<float>(c, n);
    case 10:
      return read_numbers<uint64_t>(c, n);
    case 11:
      return read_numbers<int64_t>(c, n);
    case 12:
      return read_numbers<double>(c, n);
    case 7: {
      std::vector<bool> v(n);
      for (uint64_t i = 0; i < n; ++i) {
        const auto b = static_cast<uint8_t>(c.here()[0]);
        if (b > 1)
          c.fail("key '" + key + "': bool item " + std::to_string(i) + " is " + std::to_string(b) +
                 ", not 0 or 1");
        v[i] = b == 1;
        c.skip(1);
      }
      return v;
    }
    case 8: {
      std::vector<std::string> v;
      v.reserve(n);
      const std::string what = "string item of key '" + key + "'";
      for (uint64_t i = 0; i < n; ++i) v.push_back(c.string(what));
      return v;
    }
    default: {  // 9: arrays of arrays, each with its own element type
      std::vector<GgufArray> v;
      v.reserve(n);
      for (uint64_t i = 0; i < n; ++i) v.push_back(read_array(c, key, depth + 1));
      return v;
    }
  }
}

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

}  // namespace

GgufFile::GgufFile(const std::filesystem::path& path, GgufReadOptions opts)
    : name_(path_to_utf8(path)), map_(path) {
  bytes_ = map_.bytes();
  parse(opts);
}

GgufFile GgufFile::from_bytes(std::vector<std::byte> bytes, GgufReadOptions opts,
                              std::string name) {
  GgufFile f;
  f.name_ = std::move(name);
  f.owned_ = std::move(bytes);
  f.bytes_ = f.owned_;
  f.parse(opts);
  return f;
}

void GgufFile::parse(GgufReadOptions opts) {
  Cursor c(bytes_, name_);
  c.need(4, "header");
  if (std::memcmp(c.here(), "GGUF", 4) != 0) c.fail("bad magic (not a GGUF file)");
  c.skip(4);
  version_ = c.scalar<uint32_t>("header");
  if (version_ == 1) c.fail("GGUF version 1 (32-bit counts) is not supported");
  if (version_ == 0x02000000u || version_ == 0x03000000u)
    c.fail("big-endian GGUF files are not supported");
  if (version_ != 2 && version_ != 3)
    c.fail("unsupported GGUF version " + std::to_string(version_));
  const auto n_tensors = c.scalar<uint64_t>("header");
  const auto n_kv = c.scalar<uint64_t>("header");
  // A key/value pair takes at least 13 bytes, a tensor info at least 32.
  if (n_kv > c.remaining() / 13)
    c.fail("metadata count " + std::to_string(n_kv) + " is absurd for a file of " +
           std::to_string(bytes_.size()) + " bytes");
  if (n_tensors > c.remaining() / 32)
    c.fail("tensor count " + std::to_string(n_tensors) + " is absurd for a file of " +
           std::to_string(bytes_.size()) + " bytes");

  kv_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string("metadata key");
    if (key.empty()) c.fail("metadata key " + std::to_string(i) + " is empty");
    if (key.size() > kMaxKeyBytes)
      c.fail("metadata key " + std::to_string(i) + " is longer than 65535 bytes");
    if (kv_index_.count(key)) c.fail("duplicate metadata key '" + key + "'");
    const auto type = c.scalar<uint32_t>("value type of key '" + key + "'");
    GgufValue value = read_value(c, type, key, 0);
    kv_index_.emplace(key, kv_.size());
    kv_.push_back({std::move(key), std::move(value)});
  }

  if (const GgufValue* a = find("general.alignment")) {
    const auto* v = std::get_if<uint32_t>(a);
    if (!v)
      c.fail("general.alignment is " + std::string(gguf_type_name(gguf_type_of(*a))) + ", not u32");
    if (*v == 0 || !std::has_single_bit(*v))
      c.fail("general.alignment " + std::to_string(*v) + " is not a power of two");
    alignment_ = *v;
  }

  struct Info {
    uint64_t offset;
    uint64_t nbytes;
    size_t index;  // into tensors_, or unsupported_ when !supported
    bool supported = true;
  };
  std::vector<Info> infos;
  std::vector<std::pair<uint64_t, size_t>> unsupported_offsets;
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = c.string("tensor name");
    const std::string what = "tensor '" + name + "'";
    if (tensor_index_.count(name)) c.fail("duplicate tensor name '" + name + "'");
    const auto n_dims = c.scalar<uint32_t>("dimension count of " + what);
    if (n_dims < 1 || n_dims > kMaxDims)
      c.fail(what + ": " + std::to_string(n_dims) + " dimensions (expected 1 to 4)");
    std::vector<int64_t> shape(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = c.scalar<uint64_t>("dimensions of " + what);
      if (ne == 0) c.fail(what + ": dimension " + std::to_string(d) + " is zero");
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, ne, &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.fail(what + ": element count overflows");
      shape[n_dims - 1 - d] = static_cast<int64_t>(ne);  // ne[] is innermost first
    }
    const auto type = c.scalar<uint32_t>("type of " + what);
    const auto offset = c.scalar<uint64_t>("offset of " + what);
    if (offset % alignment_ != 0)
      c.fail(what + ": offset " + std::to_string(offset) + " is not a multiple of the alignment " +
             std::to_string(alignment_));
    const std::optional<DType> dtype = dtype_from_ggml_type(type);
    if (!dtype) {
      if (!opts.allow_unsupported_types)
        c.fail(what + ": unsupported ggml type id " + std::to_string(type));
      tensor_index_.emplace(name, std::numeric_limits<size_t>::max());
      unsupported_offsets.emplace_back(offset, unsupported_.size());
      unsupported_.push_back({std::move(name), type, std::move(shape)});
      continue;
    }
    const int64_t block = dtype_block_size(*dtype);
    if (shape.back() % block != 0)
      c.fail(what + ": row length " + std::to_string(shape.back()) + " is not a multiple of the " +
             std::string(dtype_name(*dtype)) + " block size " + std::to_string(block));
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel / static_cast<uint64_t>(block),
                               static_cast<uint64_t>(dtype_block_bytes(*dtype)), &nbytes))
      c.fail(what + ": byte size overflows");
    infos.push_back({offset, nbytes, tensors_.size(), true});
    tensor_index_.emplace(name, tensors_.size());
    TensorView t;
    t.name = std::move(name);
    t.dtype = *dtype;
    t.shape = std::move(shape);
    tensors_.push_back(std::move(t));
  }

  data_offset_ = align_up(c.pos(), alignment_);
  if (n_tensors == 0) return;  // writers differ on padding an empty data section
  if (data_offset_ > bytes_.size())
    c.fail("tensor data section starts at " + std::to_string(data_offset_) +
           ", past the end of the file (" + std::to_string(bytes_.size()) + " bytes)");
  const uint64_t avail = bytes_.size() - data_offset_;
  for (const Info& in : infos) {
    TensorView& t = tensors_[in.index];
    if (in.offset > avail || in.nbytes > avail - in.offset)
      c.fail("tensor '" + t.name + "' (" + std::string(dtype_name(t.dtype)) + " " +
             shape_str(t.shape) + ", " + std::to_string(in.nbytes) + " bytes at data offset " +
             std::to_string(in.offset) + ") runs past the end of the file");
    t.data = bytes_.subspan(data_offset_ + in.offset, in.nbytes);
  }
  for (const auto& [offset, i] : unsupported_offsets) {
    if (offset > avail)
      c.fail("tensor '" + unsupported_[i].name + "': offset " + std::to_string(offset) +
             " is past the end of the file");
    infos.push_back({offset, 0, i, false});
  }
  // The data regions must tile the data section as writers lay them out (llama.cpp checks the
  // same): each tensor at the previous one's aligned end, from 0 to the end of the file. A gap
  // means a declared type or shape no longer matches the data (an edited type), and reading it
  // would give garbage. The size of a tensor of an unsupported type is unknown: no check after it.
  std::sort(infos.begin(), infos.end(),
            [](const Info& a, const Info& b) { return a.offset < b.offset; });
  auto name_of = [&](const Info& in) {
    return in.supported ? tensors_[in.index].name : unsupported_[in.index].name;
  };
  auto describe = [&](const Info& in) {
    if (!in.supported) return "tensor '" + name_of(in) + "'";
    const TensorView& t = tensors_[in.index];
    return "tensor '" + t.name + "' (" + std::string(dtype_name(t.dtype)) + " " +
           shape_str(t.shape) + ", " + std::to_string(in.nbytes) + " bytes at data offset " +
           std::to_string(in.offset) + ")";
  };
  for (size_t i = 1; i < infos.size(); ++i) {
    const Info& a = infos[i - 1];
    const Info& b = infos[i];
    if (a.offset + a.nbytes > b.offset || a.offset == b.offset)
      c.fail("tensors '" + name_of(a) + "' and '" + name_of(b) + "' overlap");
    if (a.supported && align_up(a.offset + a.nbytes, alignment_) != b.offset)
      c.fail(describe(a) + " ends " + std::to_string(b.offset - a.offset - a.nbytes) +
             " bytes before the next tensor '" + name_of(b) +
             "': its declared type or shape does not match its data");
  }
  if (infos.front().offset != 0)
    c.fail(describe(infos.front()) + " is the first tensor but does not start the data section");
  const Info& last = infos.back();
  if (last.supported && avail > align_up(last.offset + last.nbytes, alignment_))
    c.fail(describe(last) + " is the last tensor but ends " +
           std::to_string(avail - last.offset - last.nbytes) +
           " bytes before the end of the file: its declared type or shape does not match its data");
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].value;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error("gguf " + name_ + ": missing key '" + std::string(key) + "'");
  return *v;
}

namespace {

template <class Out>
Out integer_value(const GgufValue& v, const std::string& file, std::string_view key) {
  return std::visit(
      [&](const auto& x) -> Out {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if (!std::in_range<Out>(x))
            throw Error("gguf " + file + ": key '" + std::string(key) + "' = " + std::to_string(x) +
                        " is out of range");
          return static_cast<Out>(x);
        } else {
          throw Error("gguf " + file + ": key '" + std::string(key) + "' is " +
                      std::string(gguf_type_name(gguf_type_of(v))) + ", not an integer");
        }
      },
      v);
}

double float_value(const GgufValue& v, const std::string& file, std::string_view key) {
  if (const auto* f = std::get_if<float>(&v)) return *f;
  if (const auto* d = std::get_if<double>(&v)) return *d;
  throw Error("gguf " + file + ": key '" + std::string(key) + "' is " +
              std::string(gguf_type_name(gguf_type_of(v))) + ", not a float");
}

template <class T>
const T& typed(const GgufValue& v, const std::string& file, std::string_view key) {
  if (const auto* p = std::get_if<T>(&v)) return *p;
  const auto want = static_cast<GgufType>(GgufValue(T{}).index());
  throw Error("gguf " + file + ": key '" + std::string(key) + "' is " +
              std::string(gguf_type_name(gguf_type_of(v))) + ", not " +
              std::string(gguf_type_name(want)));
}

}  // namespace

uint32_t GgufFile::get_u32(std::string_view k) const {
  return integer_value<uint32_t>(get(k), name_, k);
}
int32_t GgufFile::get_i32(std::string_view k) const {
  return integer_value<int32_t>(get(k), name_, k);
}
uint64_t GgufFile::get_u64(std::string_view k) const {
  return integer_value<uint64_t>(get(k), name_, k);
}
int64_t GgufFile::get_i64(std::string_view k) const {
  return integer_value<int64_t>(get(k), name_, k);
}
float GgufFile::get_f32(std::string_view k) const {
  return static_cast<float>(float_value(get(k), name_, k));
}
double GgufFile::get_f64(std::string_view k) const {
  return float_value(get(k), name_, k);
}
bool GgufFile::get_bool(std::string_view k) const {
  return typed<bool>(get(k), name_, k);
}
const std::string& GgufFile::get_string(std::string_view k) const {
  return typed<std::string>(get(k), name_, k);
}
const GgufArray& GgufFile::get_array(std::string_view k) const {
  return typed<GgufArray>(get(k), name_, k);
}

std::optional<uint32_t> GgufFile::find_u32(std::string_view k) const {
  if (const auto* v = find(k)) return integer_value<uint32_t>(*v, name_, k);
  return std::nullopt;
}
std::optional<int32_t> GgufFile::find_i32(std::string_view k) const {
  if (const auto* v = find(k)) return integer_value<int32_t>(*v, name_, k);
  return std::nullopt;
}
std::optional<uint64_t> GgufFile::find_u64(std::string_view k) const {
  if (const auto* v = find(k)) return integer_value<uint64_t>(*v, name_, k);
  return std::nullopt;
}
std::optional<int64_t> GgufFile::find_i64(std::string_view k) const {
  if (const auto* v = find(k)) return integer_value<int64_t>(*v, name_, k);
  return std::nullopt;
}
std::optional<float> GgufFile::find_f32(std::string_view k) const {
  if (const auto* v = find(k)) return static_cast<float>(float_value(*v, name_, k));
  return std::nullopt;
}
std::optional<double> GgufFile::find_f64(std::string_view k) const {
  if (const auto* v = find(k)) return float_value(*v, name_, k);
  return std::nullopt;
}
std::optional<bool> GgufFile::find_bool(std::string_view k) const {
  if (const auto* v = find(k)) return typed<bool>(*v, name_, k);
  return std::nullopt;
}
const std::string* GgufFile::find_string(std::string_view k) const {
  if (const auto* v = find(k)) return &typed<std::string>(*v, name_, k);
  return nullptr;
}
const GgufArray* GgufFile::find_array(std::string_view k) const {
  if (const auto* v = find(k)) return &typed<GgufArray>(*v, name_, k);
  return nullptr;
}

const TensorView* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(std::string(name));
  if (it == tensor_index_.end()) return nullptr;
  if (it->second >= tensors_.size()) {
    for (const auto& u : unsupported_)
      if (u.name == name)
        throw Error("gguf " + name_ + ": tensor '" + u.name + "' has unsupported ggml type id " +
                    std::to_string(u.ggml_type));
  }
  return &tensors_[it->second];
}

const TensorView& GgufFile::tensor(std::string_view name) const {
  const TensorView* t = find_tensor(name);
  if (!t) throw Error("gguf " + name_ + ": missing tensor '" + std::string(name) + "'");
  return *t;
}

}  // namespace epwa
