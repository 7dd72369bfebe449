// gpu_backend() in a build without a GPU backend (cmake -DEPWA_CUDA=ON builds src/backend/cuda/).
#include "epwa/backend.hpp"

namespace epwa {

std::shared_ptr<const Backend> gpu_backend(std::string* why_not) {
  if (why_not) *why_not = "built without a GPU backend (cmake -DEPWA_CUDA=ON builds one)";
  return nullptr;
}

}  // namespace epwa
