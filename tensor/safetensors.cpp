#include "tensor/safetensors.h"

#include "tensor/atomic_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

namespace fgvc {

namespace {

using json = nlohmann::json;

const char* st_name(DType t) {
  switch (t) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::BFloat16: return "BF16";
    case DType::Float16: return "F16";
    case DType::Int64: return "I64";
    case DType::UInt8: return "U8";
  }
  return "?";
}

bool st_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> table[] = {{"F32", DType::Float32}, {"F64", DType::Float64},
                                                        {"BF16", DType::BFloat16}, {"F16", DType::Float16},
                                                        {"I64", DType::Int64}, {"U8", DType::UInt8}};
  for (const auto& [name, t] : table)
    if (s == name) {
      *out = t;
      return true;
    }
  return false;
}

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw Error("safetensors: " + path + ": " + why);
}

// The file mapped copy on write and read ahead in one go (MAP_POPULATE), as a storage
// that unmaps it when the last tensor viewing it goes; null where it cannot be mapped.
std::shared_ptr<Storage> map_file(const std::string& path, uint64_t expected_size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != expected_size) {
    ::close(fd);
    fail(path, "the file changed while it was read");
  }
  // Populated read-only first: populating a writable private mapping would copy every
  // page. Made writable after, a page is copied only when written (copy on write).
  void* p = ::mmap(nullptr, expected_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) return nullptr;  // a file system without mmap: read it instead
  if (::mprotect(p, expected_size, PROT_READ | PROT_WRITE) != 0) {
    ::munmap(p, expected_size);
    return nullptr;
  }
  const size_t bytes = expected_size;
  return std::make_shared<Storage>(p, bytes, [p, bytes] { ::munmap(p, bytes); });
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path, bool map) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, "is a directory, not a safetensors file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0) fail(path, "cannot read (not a regular file?)");
  const uint64_t file_size = static_cast<uint64_t>(end);
  in.seekg(0);
  if (file_size < 8) fail(path, "not a safetensors file (shorter than the 8-byte header length)");
  unsigned char len_bytes[8] = {};
  if (!in.read(reinterpret_cast<char*>(len_bytes), 8)) fail(path, "cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > file_size - 8 || header_len > (100u << 20))
    fail(path, "not a safetensors file (header length " + std::to_string(header_len) + " does not fit the file)");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  const uint64_t data_size = file_size - 8 - header_len;

  json j;
  try {
    j = json::parse(header);
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(path, "header is not a JSON object");

  std::shared_ptr<Storage> mapping;  // the whole file, when mapped
  if (map) mapping = map_file(path, file_size);
  const uint64_t data_start = 8 + header_len;

  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__ value '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(path, "tensor '" + name + "' lacks dtype, shape or data_offsets");
    if (!v["dtype"].is_string()) fail(path, "tensor '" + name + "': dtype is not a string");
    DType dtype;
    if (!st_dtype(v["dtype"].get<std::string>(), &dtype))
      fail(path, "tensor '" + name + "': unsupported dtype " + v["dtype"].get<std::string>());
    const json& js = v["shape"];
    const json& jo = v["data_offsets"];
    if (!js.is_array()) fail(path, "tensor '" + name + "': shape is not a list");
    Shape shape;
    uint64_t count = 1;
    for (const json& d : js) {
      if (!d.is_number_unsigned()) fail(path, "tensor '" + name + "': shape has a non-integer or negative entry");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim && count > (1ull << 40) / dim)) fail(path, "tensor '" + name + "': shape too large");
      count *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      fail(path, "tensor '" + name + "': data_offsets must be two non-negative integers");
    const uint64_t begin = jo[0].get<uint64_t>(), stop = jo[1].get<uint64_t>();
    if (begin > stop || stop > data_size)
      fail(path, "tensor '" + name + "': data_offsets [" + std::to_string(begin) + ", " + std::to_string(stop) +
                     "] outside the " + std::to_string(data_size) + "-byte data section");
    if (stop - begin != count * dtype_size(dtype))
      fail(path, "tensor '" + name + "': " + std::to_string(stop - begin) + " bytes for shape " + shape_str(shape) +
                     " of " + dtype_name(dtype) + " (needs " + std::to_string(count * dtype_size(dtype)) + ")");
    ranges.emplace_back(begin, stop);
    const uint64_t at = data_start + begin;
    if (mapping && at % dtype_size(dtype) == 0) {  // a view of the mapping
      auto impl = std::make_shared<TensorImpl>();
      impl->storage = mapping;
      impl->offset = static_cast<int64_t>(at / dtype_size(dtype));
      impl->shape = shape;
      impl->strides = contiguous_strides(shape);
      impl->dtype = dtype;
      impl->device = Device::cpu();
      out.tensors.emplace(name, Tensor(std::move(impl)));
      continue;
    }
    Tensor t = Tensor::empty(shape, dtype);
    if (mapping) {
      if (stop > begin) std::memcpy(t.data_ptr(), static_cast<const char*>(mapping->data()) + at, stop - begin);
    } else {
      in.seekg(static_cast<std::streamoff>(at));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(stop - begin));
      if (!in) fail(path, "tensor '" + name + "': read failed");
    }
    out.tensors.emplace(name, t);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(path, "tensors overlap in the data section");
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<Tensor> host;
  for (const auto& [name, t] : tensors) {
    FGVC_CHECK(t.defined(), "safetensors", path, ": tensor '", name, "' is undefined");
    FGVC_CHECK(name != "__metadata__", "safetensors", path, ": '__metadata__' is not a tensor name");
    host.push_back(t.cpu().contiguous());
    Shape shape = t.shape();
    header[name] = {{"dtype", st_name(t.dtype())}, {"shape", shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned

  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((static_cast<uint64_t>(h.size()) >> (8 * i)) & 0xFF);
  try {
    AtomicFile file(path);
    file.write(len, 8);
    file.write(h);
    for (const Tensor& t : host) file.write(t.data_ptr(), t.nbytes());
    file.commit();
  } catch (const Error& e) {
    throw Error(std::string("safetensors: ") + e.what());
  }
}

}  // namespace fgvc
