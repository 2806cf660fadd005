#include "model/weights.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "model/device.h"

namespace mustdrop::model {
namespace {

namespace fs = std::filesystem;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// LibTorch reads a tensor in place only at an address that is a multiple of its element size.
bool element_aligned(const TensorView& v) {
  return reinterpret_cast<uintptr_t>(v.data) % static_cast<uintptr_t>(dtype_size(v.dtype)) == 0;
}

at::ScalarType scalar_type(DType d, const std::string& where) {
  switch (d) {
    case DType::kF32:
      return at::kFloat;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kF64:
      return at::kDouble;
    case DType::kI64:
    case DType::kI32:
    case DType::kI16:
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      break;
  }
  throw ModelError(where + ": dtype " + dtype_name(d) + " is not a floating-point weight type (F32, F16, BF16)");
}

// `t`'s bytes on a read-only mapping of an unlinked temporary file (in $TMPDIR, else /tmp), as
// a checkpoint's tensor sits on its file: only the pages read are resident. `t` itself (logged)
// when no temporary file can be written.
at::Tensor file_backed(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
  if (bytes == 0) return t;
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") + "/mustdrop-weights-XXXXXX";
  auto keep_in_memory = [&](const std::string& why) {
    MD_LOG_DEBUG("model", "a " << bytes << "-byte table stays in memory: " << path << ": " << why);
    return t;
  };
  int fd = ::mkstemp(path.data());
  if (fd < 0) return keep_in_memory(std::strerror(errno));
  ::unlink(path.c_str());  // the mapping keeps the file; nothing is left behind on exit
  const char* src = static_cast<const char*>(c.data_ptr());
  // Written 64 kB at a time: the page cache then holds small folios, and reading a row maps
  // little around it (one large write gives folios of megabytes, each mapped whole on a fault).
  constexpr size_t kPiece = 64 * 1024;
  for (size_t done = 0; done < bytes;) {
    ssize_t w = ::write(fd, src + done, std::min(kPiece, bytes - done));
    if (w <= 0) {
      const int err = errno;
      ::close(fd);
      return keep_in_memory(w < 0 ? std::strerror(err) : "short write");
    }
    done += static_cast<size_t>(w);
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) return keep_in_memory(std::strerror(map_err));
  // Read-only like a checkpoint's weights: LibTorch never writes a tensor it only reads.
  return at::from_blob(map, c.sizes(), [bytes](void* p) { ::munmap(p, bytes); }, c.options());
}

}  // namespace

std::string canonical_tensor_name(const std::string& name) {
  auto starts = [&](const char* p) { return name.rfind(p, 0) == 0; };
  if (starts("model.language_model.")) return "language_model.model." + name.substr(21);
  if (starts("lm_head.")) return "language_model." + name;
  for (const char* tower : {"vision_tower.", "video_tower.", "image_tower.", "multi_modal_projector."}) {
    std::string prefixed = std::string("model.") + tower;
    if (starts(prefixed.c_str())) return name.substr(6);
  }
  return name;
}

Weights::~Weights() = default;

std::unique_ptr<Weights> Weights::open(const std::string& dir) {
  std::unique_ptr<Weights> w(new Weights());
  w->where_ = dir;
  std::vector<std::string> paths;
  fs::path single = fs::path(dir) / "model.safetensors";
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  if (fs::exists(index)) {
    std::ifstream in(index);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const std::exception& e) {
      throw ModelError(index.string() + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      throw ModelError(index.string() + ": no \"weight_map\" object");
    }
    std::set<std::string> shards;
    for (auto& [tensor, file] : j["weight_map"].items()) {
      if (!file.is_string()) throw ModelError(index.string() + ": weight_map entry '" + tensor + "' is not a file name");
      weight_map[tensor] = file.get<std::string>();
      shards.insert(file.get<std::string>());
    }
    for (const auto& s : shards) {
      fs::path p = fs::path(dir) / s;
      if (!fs::exists(p)) throw ModelError(index.string() + ": names shard '" + s + "', which " + dir + " does not have");
      paths.push_back(p.string());
    }
  } else if (fs::exists(single)) {
    paths.push_back(single.string());
  } else {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".safetensors") paths.push_back(e.path().string());
    }
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty()) {
    throw ModelError(dir + ": no weights (expected model.safetensors, or model.safetensors.index.json with its shards)");
  }
  for (const auto& p : paths) {
    auto file = std::make_shared<const SafetensorsFile>(p);
    for (const TensorView& t : file->tensors()) {
      std::string name = canonical_tensor_name(t.name);
      auto [it, fresh] = w->entries_.emplace(name, Entry{&t, at::Tensor(), file});
      if (!fresh) throw ModelError(p + ": tensor '" + t.name + "' also appears in " + it->second.file->path());
      if (!weight_map.empty()) {
        auto listed = weight_map.find(t.name);
        if (listed != weight_map.end() && fs::path(p).filename() != listed->second) {
          throw ModelError(p + ": tensor '" + t.name + "' is listed in " + index.string() + " under " + listed->second);
        }
      }
    }
  }
  for (const auto& [tensor, file] : weight_map) {
    if (!w->entries_.count(canonical_tensor_name(tensor))) {
      throw ModelError((fs::path(dir) / file).string() + ": lacks tensor '" + tensor + "' that " + index.string() +
                       " puts there");
    }
  }
  return w;
}

std::unique_ptr<Weights> Weights::from_tensors(std::map<std::string, at::Tensor> tensors) {
  std::unique_ptr<Weights> w(new Weights());
  w->where_ = "(in-memory weights)";
  for (auto& [name, t] : tensors) w->entries_[canonical_tensor_name(name)] = Entry{nullptr, t, nullptr};
  return w;
}

bool Weights::has(const std::string& name) const { return entries_.count(name) > 0; }

ShapeMap Weights::shapes() const {
  ShapeMap out;
  for (const auto& [name, e] : entries_) out[name] = e.view ? e.view->shape : e.tensor.sizes().vec();
  return out;
}

void Weights::check(const ShapeMap& expected) const {
  std::vector<std::string> missing, unexpected, wrong;
  ShapeMap have = shapes();
  for (const auto& [name, shape] : expected) {
    auto it = have.find(name);
    if (it == have.end()) {
      missing.push_back(name + " " + shape_text(shape));
    } else if (it->second != shape) {
      auto e = entries_.find(name);
      wrong.push_back(name + ": " + shape_text(it->second) + " in " + (e->second.file ? e->second.file->path() : where_) +
                      ", expected " + shape_text(shape));
    }
  }
  for (const auto& [name, shape] : have) {
    if (!expected.count(name)) unexpected.push_back(name + " " + shape_text(shape));
  }
  if (missing.empty() && unexpected.empty() && wrong.empty()) return;
  std::ostringstream os;
  os << where_ << ": the weights do not match the architecture in config.json";
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    os << "\n  " << names.size() << " " << what << ":";
    size_t shown = 0;
    for (const auto& n : names) {
      if (++shown > 40) {
        os << "\n    ... and " << names.size() - 40 << " more";
        break;
      }
      os << "\n    " << n;
    }
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("with the wrong shape", wrong);
  throw ModelError(os.str());
}

at::Tensor Weights::get_stored(const std::string& name, at::ScalarType fallback) const {
  // On a GPU the whole table is resident anyway: in the compute dtype, like every other weight.
  if (!device_.is_cpu()) return get(name, fallback);
  auto it = entries_.find(name);
  if (it == entries_.end()) throw ModelError(where_ + ": missing tensor '" + name + "'");
  const Entry& e = it->second;
  if (!e.view) return file_backed(get(name, fallback));  // onto a mapping, as a file's tensor is
  const TensorView& v = *e.view;
  const at::ScalarType src = scalar_type(v.dtype, e.file->path() + ": tensor '" + v.name + "'");
  const bool floating = src == at::kFloat || src == at::kHalf || src == at::kBFloat16;
  // In its own dtype get() maps the bytes; unaligned it would copy them, so convert instead.
  return get(name, floating && element_aligned(v) ? src : fallback);
}

at::Tensor Weights::get(const std::string& name, at::ScalarType dtype) const {
  if (device_.is_cpu()) return get_on_host(name, dtype);
  auto it = entries_.find(name);
  if (it == entries_.end()) throw ModelError(where_ + ": missing tensor '" + name + "'");
  const Entry& e = it->second;
  at::ScalarType stored = e.view ? scalar_type(e.view->dtype, e.file->path() + ": tensor '" + e.view->name + "'")
                                 : e.tensor.scalar_type();
  // Mapped bytes (or the tensor held) cross once, in the stored dtype; the GPU converts.
  at::Tensor t = to_device(get_on_host(name, stored), device_).to(dtype).contiguous();
  if (e.view) e.view->release_pages();
  return t;
}

at::Tensor Weights::get_on_host(const std::string& name, at::ScalarType dtype) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw ModelError(where_ + ": missing tensor '" + name + "'");
  const Entry& e = it->second;
  if (!e.view) {
    // In-memory weights already in the compute dtype are shared, not copied (weights are never
    // written to), so a model built from them holds one copy.
    if (e.tensor.scalar_type() == dtype && e.tensor.is_contiguous()) return e.tensor;
    return e.tensor.to(dtype).contiguous().clone();
  }
  const TensorView& v = *e.view;
  at::ScalarType src = scalar_type(v.dtype, e.file->path() + ": tensor '" + v.name + "'");
  const bool aligned = element_aligned(v);
  void* bytes = const_cast<uint8_t*>(v.data);  // read-only mapping: never written through
  if (src == dtype && aligned) {
    std::shared_ptr<const SafetensorsFile> keep = e.file;
    return at::from_blob(bytes, v.shape, [keep](void*) {}, at::TensorOptions().dtype(src));
  }
  at::Tensor converted;
  if (aligned) {
    converted = at::from_blob(bytes, v.shape, at::TensorOptions().dtype(src)).to(dtype).contiguous();
  } else {  // LibTorch needs element-aligned data: copy first
    at::Tensor raw = at::empty(v.shape, at::TensorOptions().dtype(src));
    std::memcpy(raw.data_ptr(), v.data, v.n_bytes);
    converted = raw.to(dtype).contiguous();
  }
  v.release_pages();  // so the mapped file and its conversion are never both resident
  return converted;
}

std::map<std::string, at::Tensor> random_weights(const ShapeMap& shapes, uint64_t seed, at::ScalarType dtype,
                                                 const c10::Device& device) {
  auto ends_with = [](const std::string& s, const char* tail) {
    size_t n = std::strlen(tail);
    return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
  };
  // The host's generator is serial (a 7B model's 7e9 numbers take minutes there): on a GPU the
  // numbers are drawn there, from its own generator seeded with `seed`.
  const bool host = device.is_cpu();
  at::Generator gen = host ? at::make_generator<at::CPUGeneratorImpl>(seed) : at::globalContext().defaultGenerator(device);
  if (!host) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, shape] : shapes) {
    bool norm = name.find("norm") != std::string::npos && ends_with(name, ".weight");
    const double sd = ends_with(name, ".bias") ? 0.01 : 0.02;
    if (!host) {
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype).device(device));
      out[name] = norm ? t.fill_(1) : t.normal_(0.0, sd, gen);
      continue;
    }
    // Drawn in float32 (the same numbers whatever the dtype), stored in `dtype` at once: a 7B
    // preset never holds a float32 copy of itself.
    out[name] = (norm ? at::ones(shape) : at::normal(0.0, sd, shape, gen)).to(dtype);
  }
  return out;
}

TensorData to_tensor_data(const std::string& name, const at::Tensor& tensor, DType dtype) {
  at::ScalarType st = dtype == DType::kF16 ? at::kHalf : dtype == DType::kBF16 ? at::kBFloat16 : at::kFloat;
  at::Tensor t = to_host(tensor).to(st).contiguous();
  TensorData d;
  d.name = name;
  d.dtype = dtype;
  d.shape = t.sizes().vec();
  d.bytes.resize(t.numel() * t.element_size());
  if (!d.bytes.empty()) std::memcpy(d.bytes.data(), t.data_ptr(), d.bytes.size());
  return d;
}

}  // namespace mustdrop::model
