// Writing safetensors files and sharded checkpoints in the layout the Python library produces.
#include <algorithm>
#include <bit>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/safetensors.hpp"
#include "io/safetensors_dtype.hpp"

namespace epwa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

// Tensors sorted by name after checking names, dtypes and sizes.
std::vector<const TensorToWrite*> sorted_checked(std::span<const TensorToWrite> tensors) {
  std::vector<const TensorToWrite*> out;
  for (const auto& t : tensors) {
    check(!t.name.empty(), "cannot write a tensor with an empty name to safetensors");
    check(t.name != "__metadata__", "cannot write a tensor named '__metadata__' to safetensors");
    st::dtype_to_safetensors(t.dtype, t.name);
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      check(d >= 0, "tensor '" + t.name + "': negative dimension in its shape");
      numel *= d;
    }
    const auto need = static_cast<size_t>(dtype_bytes(t.dtype, numel));
    check(t.bytes.size() == need, "tensor '" + t.name + "': " + std::to_string(t.bytes.size()) +
                                      " bytes given but its shape needs " + std::to_string(need));
    out.push_back(&t);
  }
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->name < b->name; });
  for (size_t i = 1; i < out.size(); ++i)
    check(out[i]->name != out[i - 1]->name,
          "tensor '" + out[i]->name + "' is given twice to the safetensors writer");
  return out;
}

void write_sorted(const fs::path& path, const std::vector<const TensorToWrite*>& tensors,
                  const SafetensorsMetadata& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* t : tensors) {
    const uint64_t end = offset + t->bytes.size();
    header[t->name] = {{"dtype", st::dtype_to_safetensors(t->dtype, t->name)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data then starts 8-byte aligned

  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check(out.good(), "cannot create " + path_to_utf8(tmp));
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(text.size() >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto* t : tensors)
      out.write(reinterpret_cast<const char*>(t->bytes.data()),
                static_cast<std::streamsize>(t->bytes.size()));
    out.flush();
    if (!out.good()) {
      out.close();
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error("cannot write " + path_to_utf8(path) + " (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  check(!ec,
        "cannot rename " + path_to_utf8(tmp) + " to " + path_to_utf8(path) + ": " + ec.message());
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

}  // namespace

void write_safetensors(const fs::path& path, std::span<const TensorToWrite> tensors,
                       const SafetensorsMetadata& metadata) {
  write_sorted(path, sorted_checked(tensors), metadata);
}

std::vector<fs::path> write_safetensors_sharded(const fs::path& dir,
                                                std::span<const TensorToWrite> tensors,
                                                uint64_t max_shard_bytes,
                                                const SafetensorsMetadata& metadata) {
  const auto sorted = sorted_checked(tensors);
  std::vector<std::vector<const TensorToWrite*>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const auto* t : sorted) {
    if (!shards.back().empty() && in_shard + t->bytes.size() > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(t);
    in_shard += t->bytes.size();
    total += t->bytes.size();
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "cannot create folder " + path_to_utf8(dir) + ": " + ec.message());
  if (shards.size() == 1) {
    write_sorted(dir / "model.safetensors", shards[0], metadata);
    return {dir / "model.safetensors"};
  }

  std::vector<fs::path> written;
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shard_name(i, shards.size());
    write_sorted(dir / name, shards[i], metadata);
    for (const auto* t : shards[i]) weight_map[t->name] = name;
    written.push_back(dir / name);
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::ofstream out(index_path, std::ios::trunc);
  out << index.dump(2) << '\n';
  check(out.good(), "cannot write " + path_to_utf8(index_path));
  written.push_back(index_path);
  return written;
}

}  // namespace epwa
