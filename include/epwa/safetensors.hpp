// safetensors files (HuggingFace): one memory-mapped file, or a sharded checkpoint described by
// model.safetensors.index.json. Readers validate the whole header before handing out any view.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "epwa/platform.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

using SafetensorsMetadata = std::map<std::string, std::string>;  // the "__metadata__" object

// A tensor of raw bytes, one per element, which its reader decodes: U8 (GPT-OSS's MXFP4 blocks and
// scales) or F8_E4M3 (the weights of an FP8 checkpoint, model/fp8_weights.cpp).
struct ByteTensor {
  std::string name;
  std::string dtype;  // "U8" or "F8_E4M3"
  std::vector<int64_t> shape;
  std::span<const std::byte> data;
};

// One .safetensors file. Tensor views point into the mapping and live as long as the object
// (moving the object keeps them valid). Supported dtypes: F32, F16, BF16; U8 and F8_E4M3 as bytes.
class SafetensorsFile {
 public:
  SafetensorsFile() = default;
  explicit SafetensorsFile(const std::filesystem::path& path);  // throws Error naming the file
  // Parses bytes owned by the caller, which must outlive the object; `name` appears in errors.
  static SafetensorsFile from_bytes(std::span<const std::byte> bytes,
                                    const std::string& name = "<memory>");

  // In file order (ascending data offset).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(std::string_view name) const;  // nullptr when absent
  // The byte tensors (U8, F8_E4M3), kept apart from the numeric ones.
  const std::vector<ByteTensor>& byte_tensors() const { return bytes_; }
  const SafetensorsMetadata& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }
  // Bytes before the tensor data: 8 + header length.
  uint64_t data_start() const { return data_start_; }

 private:
  void parse(std::span<const std::byte> bytes, const std::string& name);

  MappedFile file_;
  std::filesystem::path path_;
  std::vector<TensorView> tensors_;
  std::vector<ByteTensor> bytes_;
  std::unordered_map<std::string, size_t> index_;
  SafetensorsMetadata metadata_;
  uint64_t data_start_ = 0;
};

// A whole checkpoint: a folder (model.safetensors.index.json, else model.safetensors, else its only
// *.safetensors file), a single .safetensors file, or an index .json. Owns every shard. Throws
// Error when a tensor named in the index is missing from its shard or a name appears in two shards.
class SafetensorsModel {
 public:
  SafetensorsModel() = default;
  explicit SafetensorsModel(const std::filesystem::path& path);

  // Shard by shard (index order of first appearance), file order inside a shard.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(std::string_view name) const;        // nullptr when absent
  const TensorView& get(std::string_view name) const;         // throws Error naming the tensor
  const ByteTensor* find_bytes(std::string_view name) const;  // a byte tensor; nullptr when absent
  // __metadata__ of the first shard.
  const SafetensorsMetadata& metadata() const;
  const std::vector<SafetensorsFile>& shards() const { return shards_; }

 private:
  void add_shard(SafetensorsFile shard);

  std::vector<SafetensorsFile> shards_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<std::string, const ByteTensor*> bytes_;  // into shards_' own lists
};

// One tensor to write; `bytes` is the row-major payload (little-endian), numel * dtype size long.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes one .safetensors file: header JSON padded with spaces to a multiple of 8, tensors sorted
// by name with contiguous offsets. Writes to a temporary name and renames, so readers never see
// half a file. Throws Error on an unsupported dtype, a size mismatch, a duplicate or empty name.
void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const SafetensorsMetadata& metadata = {});

// Writes a HuggingFace-style sharded checkpoint into `dir`: model-0000i-of-0000n.safetensors, each
// at most `max_shard_bytes` of tensor data (a bigger tensor gets a shard of its own), and
// model.safetensors.index.json. With a single shard it writes model.safetensors and no index.
// Returns the files written (shards, then the index if any).
std::vector<std::filesystem::path> write_safetensors_sharded(
    const std::filesystem::path& dir, std::span<const TensorToWrite> tensors,
    uint64_t max_shard_bytes, const SafetensorsMetadata& metadata = {});

}  // namespace epwa
