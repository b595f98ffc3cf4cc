// safetensors: round trips of every dtype, atomic writes, and malformed files rejected with
// a message naming the file (never a crash).
#include <fstream>
#include <iterator>

#include "tensor/safetensors.h"
#include "tensor/storage.h"
#include "test_util.h"

namespace fgvc {
namespace {

std::string write_raw(const std::string& name, const std::string& header, const std::string& data) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  f << header << data;
  return path;
}

void expect_rejected(const std::string& path, const std::string& part) {
  for (const bool map : {false, true}) {
    try {
      read_safetensors(path, map);
      ADD_FAILURE() << "accepted " << path << (map ? " (mapped)" : "");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string path = ::testing::TempDir() + "/all.safetensors";
  const Tensor f = testing::randn_t({3, 4}, 1);
  std::map<std::string, Tensor> tensors{{"f32", f},
                                        {"f64", f.to(DType::Float64)},
                                        {"bf16", f.to(DType::BFloat16)},
                                        {"f16", f.to(DType::Float16)},
                                        {"i64", Tensor::from_vector(std::vector<int64_t>{-5, 7}, {2})},
                                        {"u8", Tensor::full({2, 2}, 200, DType::UInt8)},
                                        {"scalar", Tensor::scalar(2.5)},
                                        {"strided", f.transpose(0, 1)}};
  write_safetensors(path, tensors, {{"model", "resnet50"}});
  const SafetensorsFile back = read_safetensors(path);
  EXPECT_EQ(back.metadata.at("model"), "resnet50");
  ASSERT_EQ(back.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const Tensor& b = back.tensors.at(name);
    EXPECT_EQ(b.shape(), t.shape()) << name;
    EXPECT_EQ(b.dtype(), t.dtype()) << name;
    EXPECT_EQ(b.to(DType::Float64).to_vector<double>(), t.to(DType::Float64).to_vector<double>()) << name;
  }
}

TEST(Safetensors, MalformedFilesAreRejected) {
  expect_rejected(::testing::TempDir() + "/does-not-exist.safetensors", "cannot open");
  {
    const std::string p = ::testing::TempDir() + "/tiny";
    std::ofstream(p) << "abc";
    expect_rejected(p, "shorter");
  }
  expect_rejected(write_raw("huge_len", "", ""), "not valid JSON");
  expect_rejected(write_raw("not_json", "{nope", ""), "not valid JSON");
  expect_rejected(write_raw("array", "[1,2]", ""), "not a JSON object");
  expect_rejected(write_raw("dtype", R"({"x":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", "abcd"),
                  "unknown dtype Q7");
  // A type fgvc does not hold is still checked: its bytes must match its shape.
  expect_rejected(write_raw("i32size", R"({"x":{"dtype":"I32","shape":[2],"data_offsets":[0,4]}})", "abcd"),
                  "needs 8");
  expect_rejected(write_raw("range", R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd"),
                  "outside");
  expect_rejected(write_raw("size", R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"),
                  "needs 8");
  expect_rejected(write_raw("neg", R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd"),
                  "negative");
  expect_rejected(write_raw("overlap", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                       R"("y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                            "abcdefgh"),
                  "overlap");
  // The ranges must tile the data section, as the format requires: no gap, nothing after the
  // last tensor; a key given twice (JSON would keep its last value) and a NUL byte ending the
  // JSON early (nlohmann's parser would ignore what follows it) are refused.
  expect_rejected(write_raw("gap", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                   R"("y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                            "abcdefghijkl"),
                  "a gap in the data section at bytes [4, 8)");
  expect_rejected(write_raw("trailing", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcdefgh"),
                  "4 byte(s) after the last tensor");
  expect_rejected(write_raw("twice", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                     R"("x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            "abcdefgh"),
                  "repeats the key 'x'");
  expect_rejected(write_raw("meta_twice", R"({"__metadata__":{"a":"1","a":"2"}})", ""), "repeats the key 'a'");
  expect_rejected(write_raw("nul", std::string(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})") +
                                       std::string(1, '\0') + R"({"ignored":"garbage"})",
                            "a"),
                  "NUL byte");
  // Many entries claiming one range: refused before any of them is allocated (this file of
  // 1 MiB of data would otherwise ask for 40 x 1 MiB from the host pool first).
  {
    std::string many = "{";
    for (int i = 0; i < 40; ++i)
      many += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
              R"(":{"dtype":"U8","shape":[1048576],"data_offsets":[0,1048576]})";
    many += "}";
    const std::string file = write_raw("many", many, std::string(1 << 20, 'x'));
    const size_t allocations = host_pool_stats().num_allocations;
    expect_rejected(file, "overlap");
    EXPECT_EQ(host_pool_stats().num_allocations, allocations) << "tensors allocated before the ranges were checked";
  }
  expect_rejected(write_raw("fields", R"({"x":{"dtype":"F32"}})", ""), "lacks");
  expect_rejected(write_raw("meta", R"({"__metadata__":{"a":1}})", ""), "not a string");
  // A header length far beyond the file.
  const std::string p = ::testing::TempDir() + "/biglen";
  {
    std::ofstream f(p, std::ios::binary);
    const char len[8] = {char(0xff), char(0xff), char(0xff), char(0x7f), 0, 0, 0, 0};
    f.write(len, 8);
    f << "{}";
  }
  expect_rejected(p, "header length");
  // A tensor with no elements whose other sides multiply past 2^63 reads as an empty tensor of
  // that shape, mapped or not, at the very end of the file (no overflow on the way).
  const std::string empty = write_raw(
      "empty_huge", R"({"e":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[4,4]},)"
                    R"("x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      std::string("\0\0\x80\x3f", 4));
  for (const bool map : {false, true}) {
    const SafetensorsFile f = read_safetensors(empty, map);
    EXPECT_EQ(f.tensors.at("e").shape(), (Shape{0, int64_t(1) << 40, int64_t(1) << 40}));
    EXPECT_EQ(f.tensors.at("e").numel(), 0);
    EXPECT_EQ(f.tensors.at("x").to_vector<float>(), (std::vector<float>{1.0f}));
  }
}

// Mapped reading: tensors aligned for their dtype view the mapping, the others are copied
// out; both read the same values as ordinary reading, outlive the file struct, and writes
// to them stay in this process.
// Tensors of the format's other types (I32, BOOL, U64, I16, the 8-bit floats) are listed, not
// read, and do not stop the file's other tensors loading; the header alone gives every entry
// in file order.
TEST(Safetensors, OtherTypesAreListedAndTheHeaderReadsAlone) {
  std::string data;
  for (const int32_t v : {1, -2}) data.append(reinterpret_cast<const char*>(&v), 4);   // ids, I32 [2]
  const float w = 1.5f;
  data.append(reinterpret_cast<const char*>(&w), 4);                                   // w, F32 [1]
  data.append(std::string("\x07\x00", 2));                                             // mask, BOOL [2]
  data.append(std::string("\x38", 1));                                                 // f8, F8_E4M3 [1]
  const uint64_t big = 1ull << 63, small = 12345;
  data.append(reinterpret_cast<const char*>(&small), 8);                                // u64, U64 [1]
  data.append(reinterpret_cast<const char*>(&big), 8);                                  // huge, U64 [1]
  const int16_t minus_300 = -300;
  data.append(reinterpret_cast<const char*>(&minus_300), 2);                                  // i16, I16 [1]
  const std::string path = write_raw("mixed",
                                     R"({"__metadata__":{"k":"v"},"ids":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                                     R"("mask":{"dtype":"BOOL","shape":[2],"data_offsets":[12,14]},)"
                                     R"("f8":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[14,15]},)"
                                     R"("u64":{"dtype":"U64","shape":[1],"data_offsets":[15,23]},)"
                                     R"("huge":{"dtype":"U64","shape":[1],"data_offsets":[23,31]},)"
                                     R"("i16":{"dtype":"I16","shape":[1],"data_offsets":[31,33]}})",
                                     data);
  for (const bool map : {false, true}) {
    const SafetensorsFile f = read_safetensors(path, map);
    ASSERT_EQ(f.tensors.size(), 1u) << map;
    EXPECT_EQ(f.tensors.at("w").to_vector<float>(), std::vector<float>{1.5f});
    EXPECT_EQ(f.unsupported, (std::map<std::string, std::string>{{"ids", "I32"},
                                                                  {"mask", "BOOL"},
                                                                  {"f8", "F8_E4M3"},
                                                                  {"u64", "U64"},
                                                                  {"huge", "U64"},
                                                                  {"i16", "I16"}}));
    EXPECT_EQ(f.metadata.at("k"), "v");
  }
  // The format's newer whole-byte types too: an 8-bit scale and a complex pair of float32.
  const std::string newer = write_raw("newer",
                                      R"({"scale":{"dtype":"F8_E8M0","shape":[2],"data_offsets":[0,2]},)"
                                      R"("z":{"dtype":"C64","shape":[1],"data_offsets":[2,10]}})",
                                      std::string(10, '\x01'));
  EXPECT_EQ(read_safetensors(newer).unsupported,
            (std::map<std::string, std::string>{{"scale", "F8_E8M0"}, {"z", "C64"}}));
  const SafetensorsHeader h = read_safetensors_header(path);
  ASSERT_EQ(h.entries.size(), 7u);
  EXPECT_EQ(h.entries[0].name, "ids");
  EXPECT_EQ(h.entries[1].name, "w");
  EXPECT_EQ(h.entries[2].name, "mask");
  EXPECT_EQ(h.entries[1].dtype, "F32");
  EXPECT_EQ(h.entries[2].shape, (Shape{2}));
  EXPECT_EQ(h.entries[2].begin, 12u);
  EXPECT_EQ(h.entries[2].stop, 14u);
  EXPECT_TRUE(h.has("mask"));
  EXPECT_FALSE(h.has("k"));  // metadata is not a tensor
  EXPECT_EQ(h.metadata.at("k"), "v");
  EXPECT_EQ(h.file_size, h.data_start + data.size());
}

TEST(Safetensors, MappedReadingViewsAlignedTensorsAndCopiesTheRest) {
  const std::string path = ::testing::TempDir() + "/mapped.safetensors";
  const Tensor f = testing::randn_t({5, 7}, 3);
  write_safetensors(path, {{"f32", f}, {"i64", Tensor::from_vector(std::vector<int64_t>{3, -1, 4}, {3})}});
  Tensor kept;
  {
    const SafetensorsFile mapped = read_safetensors(path, true), read = read_safetensors(path);
    for (const auto& [name, t] : read.tensors)
      EXPECT_EQ(mapped.tensors.at(name).to(DType::Float64).to_vector<double>(), t.to(DType::Float64).to_vector<double>())
          << name;
    kept = mapped.tensors.at("f32");
  }
  EXPECT_EQ(kept.to_vector<float>(), f.to_vector<float>());  // the mapping lives with its tensors
  kept.fill_(1.0);
  EXPECT_EQ(read_safetensors(path).tensors.at("f32").to_vector<float>(), f.to_vector<float>());

  // An F32 tensor at an odd offset (after 3 bytes of U8): copied out, same values.
  std::string header = R"({"u":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                       R"("f":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  while ((8 + header.size()) % 4 != 0) header += ' ';
  const float values[2] = {1.5f, -2.25f};
  std::string data = "abc";
  data.append(reinterpret_cast<const char*>(values), sizeof values);
  const std::string odd = write_raw("odd_offset", header, data);
  const SafetensorsFile m = read_safetensors(odd, true);
  EXPECT_EQ(m.tensors.at("f").to_vector<float>(), std::vector<float>({1.5f, -2.25f}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m.tensors.at("f").data_ptr()) % alignof(float), 0u);
  EXPECT_EQ(m.tensors.at("u").to(DType::Float64).to_vector<double>(), std::vector<double>({97, 98, 99}));
}

// The writer puts tensors of larger elements first, so that every tensor is aligned for its
// dtype (mapped, a view); metadata that is not UTF-8 (a Latin-1 path) is written with U+FFFD,
// and a tensor name that is not UTF-8 is an error naming the file.
TEST(Safetensors, WriterAlignsTensorsAndKeepsTheHeaderUtf8) {
  const std::string path = ::testing::TempDir() + "/aligned.safetensors";
  write_safetensors(path,
                    {{"a_mask", Tensor::full({3}, 1, DType::UInt8)},
                     {"b_weight", Tensor::full({2}, 0.5)},
                     {"c_count", Tensor::from_vector(std::vector<int64_t>{7}, {1})}},
                    {{"weights", "w\xff.safetensors"}});
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(bytes.find(R"("c_count":{"data_offsets":[0,8])"), std::string::npos) << bytes.substr(0, 300);
  EXPECT_NE(bytes.find(R"("b_weight":{"data_offsets":[8,16])"), std::string::npos) << bytes.substr(0, 300);
  EXPECT_NE(bytes.find(R"("a_mask":{"data_offsets":[16,19])"), std::string::npos) << bytes.substr(0, 300);
  const SafetensorsFile f = read_safetensors(path, true);
  EXPECT_EQ(f.metadata.at("weights"), "w\xEF\xBF\xBD.safetensors");
  EXPECT_EQ(f.tensors.at("b_weight").to_vector<float>(), std::vector<float>({0.5f, 0.5f}));
  EXPECT_EQ(f.tensors.at("c_count").to_vector<int64_t>(), std::vector<int64_t>({7}));
  try {
    write_safetensors(::testing::TempDir() + "/badname.safetensors", {{"w\xff", Tensor::full({1}, 1.0)}});
    ADD_FAILURE() << "a name that is not UTF-8 was written";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("badname.safetensors: a tensor name is not UTF-8 text"), std::string::npos)
        << e.what();
  }
}

TEST(Safetensors, WriteReplacesAtomically) {
  const std::string path = ::testing::TempDir() + "/atomic.safetensors";
  write_safetensors(path, {{"x", Tensor::full({2}, 1.0)}});
  write_safetensors(path, {{"x", Tensor::full({3}, 2.0)}});
  EXPECT_EQ(read_safetensors(path).tensors.at("x").to_vector<float>(), std::vector<float>(3, 2.0f));
  EXPECT_THROW(write_safetensors("/nonexistent-dir/x.safetensors", {{"x", Tensor::zeros({1})}}), Error);
}


// The writer aligns each tensor for its dtype, so a mapped read makes every tensor a view of
// the one mapping (no copies); header lengths of every remainder mod 8 (the name's length).
TEST(Safetensors, MappedTensorsOfAWrittenFileAreViewsOfTheMapping) {
  for (int k = 0; k < 8; ++k) {
    const std::string path = ::testing::TempDir() + "/views" + std::to_string(k) + ".safetensors";
    const std::string pad(static_cast<size_t>(k), 'x');
    write_safetensors(path, {{"a_f64" + pad, Tensor::full({3}, 1.5, DType::Float64)},
                             {"b_i64", Tensor::from_vector(std::vector<int64_t>{4, -2}, {2})},
                             {"c_f32", Tensor::full({5}, 2.5)},
                             {"d_bf16", Tensor::full({3}, 0.5, DType::BFloat16)},
                             {"e_u8", Tensor::full({3}, 7, DType::UInt8)}});
    const SafetensorsFile f = read_safetensors(path, true);
    ASSERT_EQ(f.tensors.size(), 5u);
    const Storage* mapping = f.tensors.begin()->second.storage().get();
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    EXPECT_EQ(mapping->bytes(), static_cast<size_t>(in.tellg())) << k;
    for (const auto& [name, t] : f.tensors) EXPECT_EQ(t.storage().get(), mapping) << name << ": copied, not a view";
    EXPECT_EQ(f.tensors.at("a_f64" + pad).to_vector<double>(), std::vector<double>(3, 1.5));
    EXPECT_EQ(f.tensors.at("b_i64").to_vector<int64_t>(), (std::vector<int64_t>{4, -2}));
  }
}

}  // namespace
}  // namespace fgvc
