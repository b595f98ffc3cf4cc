#include "tensor/safetensors.h"

#include "tensor/atomic_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
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

// Every type of the safetensors format, with its element size; `held` says whether fgvc has
// the type (the others are validated but not read: SafetensorsFile::unsupported).
struct StType {
  const char* name;
  uint64_t size;
  bool held;
  DType dtype;
};
constexpr StType kStTypes[] = {
    {"F32", 4, true, DType::Float32},   {"F64", 8, true, DType::Float64},  {"BF16", 2, true, DType::BFloat16},
    {"F16", 2, true, DType::Float16},   {"I64", 8, true, DType::Int64},    {"U8", 1, true, DType::UInt8},
    {"BOOL", 1, false, DType::UInt8},   {"I8", 1, false, DType::UInt8},    {"I16", 2, false, DType::UInt8},
    {"U16", 2, false, DType::UInt8},    {"I32", 4, false, DType::UInt8},   {"U32", 4, false, DType::UInt8},
    {"U64", 8, false, DType::UInt8},    {"F8_E4M3", 1, false, DType::UInt8}, {"F8_E5M2", 1, false, DType::UInt8},
    {"F8_E8M0", 1, false, DType::UInt8}, {"C64", 8, false, DType::UInt8}};  // (the packed 4- and 6-bit floats: unknown)

const StType* st_type(const std::string& s) {
  for (const StType& t : kStTypes)
    if (s == t.name) return &t;
  return nullptr;
}

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw Error("safetensors: " + path + ": " + why);
}

// `text` with each byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string as_utf8(const std::string& text) {
  const std::string quoted = json(text).dump(-1, ' ', false, json::error_handler_t::replace);
  return json::parse(quoted).get<std::string>();
}

// An open file, closed when this goes.
struct OpenFile {
  int fd = -1;
  ~OpenFile() {
    if (fd >= 0) ::close(fd);
  }
};

// `bytes` bytes at `offset` of the file; false at a short read or an error.
bool read_at(int fd, void* out, uint64_t bytes, uint64_t offset) {
  char* p = static_cast<char*>(out);
  while (bytes > 0) {
    const ssize_t got = ::pread(fd, p, std::min<uint64_t>(bytes, 1u << 30), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got, offset += static_cast<uint64_t>(got), bytes -= static_cast<uint64_t>(got);
  }
  return true;
}

// The open file mapped copy on write and read ahead in one go (MAP_POPULATE), as a storage
// that unmaps it when the last tensor viewing it goes; null where it cannot be mapped.
std::shared_ptr<Storage> map_file(int fd, uint64_t size) {
  // Populated read-only first: populating a writable private mapping would copy every
  // page. Made writable after, a page is copied only when written (copy on write).
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) return nullptr;  // a file system without mmap: read it instead
  if (::mprotect(p, size, PROT_READ | PROT_WRITE) != 0) {
    ::munmap(p, size);
    return nullptr;
  }
  const size_t bytes = size;
  return std::make_shared<Storage>(p, bytes, [p, bytes] { ::munmap(p, bytes); });
}

// Opens `path` for reading: a regular file, or an error naming the problem.
void open_for_reading(const std::string& path, OpenFile* file, uint64_t* size) {
  file->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(file->fd, &st) != 0) fail(path, std::string("cannot read: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not a safetensors file");
  if (!S_ISREG(st.st_mode)) fail(path, "cannot read (not a regular file)");
  *size = static_cast<uint64_t>(st.st_size);
}

// The header of the open file, validated (read_safetensors_header's promise).
SafetensorsHeader parse_header(int fd, uint64_t file_size, const std::string& path) {
  if (file_size < 8) fail(path, "not a safetensors file (shorter than the 8-byte header length)");
  unsigned char len_bytes[8] = {};
  if (!read_at(fd, len_bytes, 8, 0)) fail(path, "cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > file_size - 8 || header_len > (100u << 20))
    fail(path, "not a safetensors file (header length " + std::to_string(header_len) + " does not fit the file)");
  std::string header(header_len, '\0');
  if (!read_at(fd, header.data(), header_len, 8)) fail(path, "cannot read the header");
  const uint64_t data_size = file_size - 8 - header_len;

  // nlohmann's parser would stop at a NUL and take what follows for nothing; the format pads
  // with spaces only.
  if (header.find('\0') != std::string::npos) fail(path, "header holds a NUL byte");
  json j;
  std::string repeated;  // the first key an object repeats (JSON keeps only its last value)
  {
    std::vector<std::set<std::string>> open_objects;  // the keys of each object being parsed
    const json::parser_callback_t note_keys = [&](int, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::object_start) {
        open_objects.emplace_back();
      } else if (event == json::parse_event_t::object_end) {
        if (!open_objects.empty()) open_objects.pop_back();
      } else if (event == json::parse_event_t::key && !open_objects.empty()) {
        const std::string key = parsed.get<std::string>();
        if (!open_objects.back().insert(key).second && repeated.empty()) repeated = key;
      }
      return true;
    };
    try {
      j = json::parse(header, note_keys);
    } catch (const json::exception& e) {
      fail(path, std::string("header is not valid JSON: ") + e.what());
    }
  }
  if (!repeated.empty()) fail(path, "header repeats the key '" + repeated + "'");
  if (!j.is_object()) fail(path, "header is not a JSON object");

  // First every entry is checked, and the ranges together (they must tile the data section,
  // as the format requires), before any tensor is allocated: a small file whose entries all
  // claim one large range must not make the reader allocate that range a thousand times.
  SafetensorsHeader out;
  std::vector<SafetensorsEntry>& entries = out.entries;
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
    const std::string dtype = v["dtype"].get<std::string>();
    const StType* type = st_type(dtype);
    if (!type) fail(path, "tensor '" + name + "': unknown dtype " + dtype);
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
    if (stop - begin != count * type->size)
      fail(path, "tensor '" + name + "': " + std::to_string(stop - begin) + " bytes for shape " + shape_str(shape) +
                     " of " + dtype + " (needs " + std::to_string(count * type->size) + ")");
    entries.push_back({name, dtype, std::move(shape), begin, stop});
  }
  // In file order (which also makes the reads below sequential).
  std::sort(entries.begin(), entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return std::tie(a.begin, a.stop) < std::tie(b.begin, b.stop); });
  uint64_t covered = 0;  // the ranges, in order, each starting where the last ended
  for (const SafetensorsEntry& e : entries) {
    if (e.begin < covered) fail(path, "tensors overlap in the data section");
    if (e.begin > covered)
      fail(path, "a gap in the data section at bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) + ")");
    covered = e.stop;
  }
  if (covered != data_size)
    fail(path, std::to_string(data_size - covered) + " byte(s) after the last tensor (the data section is " +
                   std::to_string(data_size) + " bytes)");

  out.data_start = 8 + header_len;
  out.file_size = file_size;
  return out;
}

}  // namespace

bool SafetensorsHeader::has(const std::string& name) const {
  return std::any_of(entries.begin(), entries.end(), [&](const SafetensorsEntry& e) { return e.name == name; });
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  OpenFile file;
  uint64_t size = 0;
  open_for_reading(path, &file, &size);
  return parse_header(file.fd, size, path);
}

SafetensorsFile read_safetensors(const std::string& path, bool map) {
  // One descriptor for the header and the data: a file replaced (renamed over) while it is
  // read is read whole, old or new, never the old header with the new data.
  OpenFile file;
  uint64_t size = 0;
  open_for_reading(path, &file, &size);
  const SafetensorsHeader header = parse_header(file.fd, size, path);
  SafetensorsFile out;
  out.metadata = header.metadata;
  std::shared_ptr<Storage> mapping;  // the whole file, when mapped
  if (map) mapping = map_file(file.fd, header.file_size);
  const uint64_t data_start = header.data_start;
  for (const SafetensorsEntry& e : header.entries) {
    const StType& type = *st_type(e.dtype);
    const DType dtype = type.dtype;
    const uint64_t at = data_start + e.begin;
    if (!type.held) {
      out.unsupported.emplace(e.name, e.dtype);
      continue;
    }
    if (mapping && at % dtype_size(dtype) == 0) {  // a view of the mapping
      auto impl = std::make_shared<TensorImpl>();
      impl->storage = mapping;
      impl->offset = static_cast<int64_t>(at / dtype_size(dtype));
      impl->shape = e.shape;
      impl->strides = contiguous_strides(e.shape);
      impl->dtype = dtype;
      impl->device = Device::cpu();
      out.tensors.emplace(e.name, Tensor(std::move(impl)));
      continue;
    }
    Tensor t = Tensor::empty(e.shape, dtype);
    if (mapping) {
      if (e.stop > e.begin) std::memcpy(t.data_ptr(), static_cast<const char*>(mapping->data()) + at, e.stop - e.begin);
    } else if (!read_at(file.fd, t.data_ptr(), e.stop - e.begin, at)) {
      fail(path, "tensor '" + e.name + "': read failed (the file shrank while it was read?)");
    }
    out.tensors.emplace(e.name, t);
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  // Metadata is informative text (a model name, a path): bytes that are not UTF-8 (a Latin-1
  // folder name) are written as U+FFFD rather than failing a finished run's output.
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [key, value] : metadata) meta[as_utf8(key)] = as_utf8(value);
    header["__metadata__"] = meta;
  }
  // Tensors of the larger element types first (then by name), so that each one's data starts
  // at a multiple of its element size and a mapped file's tensors are views, not copies.
  std::vector<std::pair<std::string, Tensor>> order;
  for (const auto& [name, t] : tensors) {
    FGVC_CHECK(t.defined(), "safetensors", path, ": tensor '", name, "' is undefined");
    FGVC_CHECK(name != "__metadata__", "safetensors", path, ": '__metadata__' is not a tensor name");
    order.emplace_back(name, t);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second.dtype()) > dtype_size(b.second.dtype());
  });
  uint64_t offset = 0;
  std::vector<Tensor> host;
  for (const auto& [name, t] : order) {
    host.push_back(t.cpu().contiguous());
    Shape shape = t.shape();
    header[name] = {{"dtype", st_name(t.dtype())}, {"shape", shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h;
  try {
    h = header.dump();
  } catch (const json::exception& e) {  // a tensor name that is not UTF-8 text
    fail(path, std::string("a tensor name is not UTF-8 text: ") + e.what());
  }
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
