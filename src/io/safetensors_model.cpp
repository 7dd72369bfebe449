// A checkpoint made of one or more safetensors shards, found through model.safetensors.index.json.
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/safetensors.hpp"

namespace epwa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";

json read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot open " + path_to_utf8(path));
  std::ostringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  check(!j.is_discarded(), path_to_utf8(path) + ": not valid JSON");
  return j;
}

// Shard names come from a file we do not trust: keep them inside the checkpoint's folder.
void check_shard_name(const fs::path& index, const std::string& shard) {
  const fs::path p = path_from_utf8(shard);
  // No root at all: on Windows "/etc/x" (drive-relative) and "C:x" are relative yet not inside.
  bool ok = !shard.empty() && !p.has_root_path();
  for (const auto& part : p)
    if (part == "..") ok = false;
  check(ok,
        path_to_utf8(index) + ": shard name '" + shard + "' is not a file name inside the folder");
}

fs::path resolve_folder(const fs::path& dir) {
  if (fs::exists(dir / kIndexName)) return dir / kIndexName;
  if (fs::exists(dir / "model.safetensors")) return dir / "model.safetensors";
  std::vector<fs::path> found;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") found.push_back(e.path());
  check(!found.empty(), path_to_utf8(dir) + ": no .safetensors file in the folder");
  check(found.size() == 1, path_to_utf8(dir) + ": several .safetensors files but no " + kIndexName);
  return found.front();
}

}  // namespace

SafetensorsModel::SafetensorsModel(const fs::path& path) {
  std::error_code ec;
  check(fs::exists(path, ec), "no such file or folder: " + path_to_utf8(path));
  const fs::path target = fs::is_directory(path, ec) ? resolve_folder(path) : path;
  if (target.extension() != ".json") {
    add_shard(SafetensorsFile(target));
    return;
  }

  const json j = read_json_file(target);
  check(j.is_object(), path_to_utf8(target) + ": index is not a JSON object");
  check(j.contains("weight_map") && j["weight_map"].is_object(),
        path_to_utf8(target) + ": index has no 'weight_map' object");
  const json& wm = j["weight_map"];
  check(!wm.empty(), path_to_utf8(target) + ": 'weight_map' is empty");
  // Shard file -> the tensors the index places there, shards in name order (model-00001-of-...).
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [tensor, shard] : wm.items()) {
    check(shard.is_string(),
          path_to_utf8(target) + ": 'weight_map' entry of '" + tensor + "' is not a string");
    const auto& s = shard.get_ref<const std::string&>();
    check_shard_name(target, s);
    by_shard[s].push_back(tensor);
  }
  const fs::path dir = target.parent_path();
  for (const auto& [shard, names] : by_shard) {
    const fs::path file = dir / path_from_utf8(shard);
    SafetensorsFile f(file);
    for (const auto& n : names)
      check(f.find(n) != nullptr, path_to_utf8(target) + ": tensor '" + n +
                                      "' is missing from shard " + path_to_utf8(file));
    add_shard(std::move(f));
  }
}

void SafetensorsModel::add_shard(SafetensorsFile shard) {
  // Views point into the shard's mapping, which moving the object does not relocate.
  for (const auto& t : shard.tensors()) {
    if (!index_.contains(t.name)) continue;
    for (const auto& s : shards_)
      if (s.find(t.name))
        throw Error("tensor '" + t.name + "' appears in both " + path_to_utf8(s.path()) + " and " +
                    path_to_utf8(shard.path()));
  }
  for (const auto& t : shard.tensors()) {
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(t);
  }
  shards_.push_back(std::move(shard));
  // A shard that moves keeps its lists' buffers: the pointers stay valid.
  for (const auto& t : shards_.back().byte_tensors()) bytes_.emplace(t.name, &t);
}

const ByteTensor* SafetensorsModel::find_bytes(std::string_view name) const {
  const auto it = bytes_.find(std::string(name));
  return it == bytes_.end() ? nullptr : it->second;
}

const TensorView* SafetensorsModel::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorView& SafetensorsModel::get(std::string_view name) const {
  const TensorView* t = find(name);
  if (!t) {
    if (find_bytes(name))
      throw Error("tensor '" + std::string(name) +
                  "' is U8 (raw bytes), not a weight type epwa reads");
    const std::string where =
        shards_.empty() ? std::string("the checkpoint") : path_to_utf8(shards_.front().path());
    throw Error("tensor '" + std::string(name) + "' not found in " + where +
                (shards_.size() > 1 ? " and its other shards" : ""));
  }
  return *t;
}

const SafetensorsMetadata& SafetensorsModel::metadata() const {
  static const SafetensorsMetadata kEmpty;
  return shards_.empty() ? kEmpty : shards_.front().metadata();
}

}  // namespace epwa
