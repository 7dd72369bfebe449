// GGUF v3 writer: the header, metadata and tensor infos are encoded in memory (small), then each
// tensor's bytes are streamed to the file from its span or producer, one tensor at a time.
#include <bit>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <system_error>

#include "epwa/gguf.hpp"
#include "epwa/platform.hpp"

namespace epwa {
namespace {

constexpr size_t kMaxTensorName = 63;  // llama.cpp keeps names in 64-byte buffers, NUL included

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

class Encoder {
 public:
  std::vector<std::byte> buf;

  template <class T>
  void scalar(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    buf.insert(buf.end(), p, p + sizeof(T));
  }
  void string(std::string_view s) {
    scalar<uint64_t>(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    buf.insert(buf.end(), p, p + s.size());
  }
  void array(const GgufArray& a) {
    scalar<uint32_t>(static_cast<uint32_t>(a.type()));
    scalar<uint64_t>(a.size());
    std::visit(
        [&](const auto& v) {
          using T = typename std::decay_t<decltype(v)>::value_type;
          if constexpr (std::is_same_v<T, bool>) {
            for (bool b : v) scalar<uint8_t>(b ? 1 : 0);
          } else if constexpr (std::is_same_v<T, std::string>) {
            for (const auto& s : v) string(s);
          } else if constexpr (std::is_same_v<T, GgufArray>) {
            for (const auto& x : v) array(x);
          } else {
            const auto* p = reinterpret_cast<const std::byte*>(v.data());
            buf.insert(buf.end(), p, p + v.size() * sizeof(T));
          }
        },
        a.items);
  }
  void value(const GgufValue& v) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, bool>) {
            scalar<uint8_t>(x ? 1 : 0);
          } else if constexpr (std::is_same_v<T, std::string>) {
            string(x);
          } else if constexpr (std::is_same_v<T, GgufArray>) {
            array(x);
          } else {
            scalar<T>(x);
          }
        },
        v);
  }
};

}  // namespace

void GgufWriter::set(std::string key, GgufValue value) {
  check(!key.empty() && key.size() <= 65535,
        "gguf writer: metadata key '" + key + "' must be 1 to 65535 bytes");
  if (key == "general.alignment") {
    const auto* a = std::get_if<uint32_t>(&value);
    check(a != nullptr, "gguf writer: general.alignment must be a u32");
    check(*a >= 8 && std::has_single_bit(*a) && *a % 8 == 0,
          "gguf writer: general.alignment " + std::to_string(*a) +
              " must be a power of two and a multiple of 8");
    alignment_ = *a;
  }
  if (const auto it = kv_index_.find(key); it != kv_index_.end()) {
    kv_[it->second].value = std::move(value);
    return;
  }
  kv_index_.emplace(key, kv_.size());
  kv_.push_back({std::move(key), std::move(value)});
}

void GgufWriter::set_alignment(uint32_t alignment) {
  set("general.alignment", GgufValue{alignment});
}

uint64_t GgufWriter::check_tensor(const std::string& name, DType dtype,
                                  const std::vector<int64_t>& shape) const {
  const std::string what = "gguf writer: tensor '" + name + "'";
  check(!name.empty() && name.size() <= kMaxTensorName,
        what + ": name must be 1 to " + std::to_string(kMaxTensorName) + " bytes");
  check(!tensor_index_.count(name), what + " added twice");
  check(!shape.empty() && shape.size() <= 4,
        what + ": " + std::to_string(shape.size()) + " dimensions (expected 1 to 4)");
  int64_t numel = 1;
  for (int64_t d : shape) {
    check(d >= 1, what + ": dimension " + std::to_string(d) + " is not positive");
    check(!__builtin_mul_overflow(numel, d, &numel), what + ": element count overflows");
  }
  const int64_t block = dtype_block_size(dtype);
  check(shape.back() % block == 0,
        what + ": row length " + std::to_string(shape.back()) + " is not a multiple of the " +
            std::string(dtype_name(dtype)) + " block size " + std::to_string(block));
  int64_t nbytes = 0;
  check(!__builtin_mul_overflow(numel / block, dtype_block_bytes(dtype), &nbytes),
        what + ": byte size overflows");
  return static_cast<uint64_t>(nbytes);
}

void GgufWriter::add_pending(std::string name, DType dtype, std::vector<int64_t> shape,
                             uint64_t nbytes, Producer producer) {
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back({std::move(name), dtype, std::move(shape), nbytes, std::move(producer)});
}

namespace {
void check_size(const std::string& name, DType dtype, uint64_t want, size_t got) {
  check(got == want, "gguf writer: tensor '" + name + "' has " + std::to_string(got) + " bytes, " +
                         std::string(dtype_name(dtype)) + " of that shape needs " +
                         std::to_string(want));
}
}  // namespace

void GgufWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> shape,
                            std::span<const std::byte> data) {
  const uint64_t nbytes = check_tensor(name, dtype, shape);
  check_size(name, dtype, nbytes, data.size());
  add_pending(std::move(name), dtype, std::move(shape), nbytes,
              [data](const Emit& emit) { emit(data); });
}

void GgufWriter::add_tensor_copy(std::string name, DType dtype, std::vector<int64_t> shape,
                                 std::span<const std::byte> data) {
  const uint64_t nbytes = check_tensor(name, dtype, shape);
  check_size(name, dtype, nbytes, data.size());
  auto copy = std::make_shared<const std::vector<std::byte>>(data.begin(), data.end());
  add_pending(std::move(name), dtype, std::move(shape), nbytes,
              [copy](const Emit& emit) { emit(*copy); });
}

void GgufWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> shape,
                            Producer producer) {
  const uint64_t nbytes = check_tensor(name, dtype, shape);
  check(static_cast<bool>(producer), "gguf writer: tensor '" + name + "' has no producer");
  add_pending(std::move(name), dtype, std::move(shape), nbytes, std::move(producer));
}

void GgufWriter::write(const std::filesystem::path& path) const {
  const std::string where = "gguf writer " + path_to_utf8(path);
  Encoder e;
  e.buf.insert(e.buf.end(), {std::byte{'G'}, std::byte{'G'}, std::byte{'U'}, std::byte{'F'}});
  e.scalar<uint32_t>(3);
  e.scalar<uint64_t>(tensors_.size());
  e.scalar<uint64_t>(kv_.size());
  for (const auto& kv : kv_) {
    e.string(kv.key);
    e.scalar<uint32_t>(static_cast<uint32_t>(gguf_type_of(kv.value)));
    e.value(kv.value);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    e.string(t.name);
    e.scalar<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)
      e.scalar<uint64_t>(static_cast<uint64_t>(*it));  // ne[] innermost first
    e.scalar<uint32_t>(ggml_type_of(t.dtype));
    e.scalar<uint64_t>(offset);
    offset = align_up(offset + t.nbytes, alignment_);
  }
  e.buf.resize(align_up(e.buf.size(), alignment_), std::byte{0});

  std::filesystem::path tmp = path;
  tmp += ".tmp";
  try {
    std::vector<char> iobuf(size_t{1} << 20);
    std::ofstream out;
    out.rdbuf()->pubsetbuf(iobuf.data(), static_cast<std::streamsize>(iobuf.size()));
    out.open(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(where + ": cannot create " + path_to_utf8(tmp));
    auto put = [&](std::span<const std::byte> b) {
      out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
      if (!out) throw Error(where + ": write failed (disk full?)");
    };
    put(e.buf);
    const std::vector<std::byte> zeros(alignment_, std::byte{0});
    for (const auto& t : tensors_) {
      uint64_t written = 0;
      t.producer([&](std::span<const std::byte> chunk) {
        if (chunk.size() > t.nbytes - written)
          throw Error(where + ": tensor '" + t.name + "' produced more than its " +
                      std::to_string(t.nbytes) + " bytes");
        put(chunk);
        written += chunk.size();
      });
      if (written != t.nbytes)
        throw Error(where + ": tensor '" + t.name + "' produced " + std::to_string(written) +
                    " of its " + std::to_string(t.nbytes) + " bytes");
      put(std::span(zeros).first(align_up(t.nbytes, alignment_) - t.nbytes));
    }
    out.close();
    if (!out) throw Error(where + ": closing the file failed");
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw Error(where + ": cannot rename " + path_to_utf8(tmp) + ": " + ec.message());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace epwa
