// safetensors reader, checkpoint view and writer: round trips with random data, and a corpus of
// malformed files, each refused with its own message (never a crash: this runs under ASan too).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "format/safetensors.h"
#include "test_seed.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / fmt::format("nibble_st_{:016x}", (uint64_t(rd()) << 32) | rd());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// [u64 LE length][header][data]
std::string raw_file(const std::string& header, const std::string& data, uint64_t length_override = 0,
                     bool override_length = false) {
  const uint64_t n = override_length ? length_override : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char(uint8_t(n >> (8 * i)));
  return out + header + data;
}

std::vector<uint8_t> random_bytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

TensorSpec spec_of(std::string name, DType dtype, std::vector<int64_t> shape,
                   const std::vector<uint8_t>& bytes) {
  TensorSpec s;
  s.name = std::move(name);
  s.dtype = dtype;
  s.shape = std::move(shape);
  s.fill = [&bytes](uint8_t* out, size_t n) {
    ASSERT_EQ(n, bytes.size());
    std::memcpy(out, bytes.data(), n);
  };
  return s;
}

// Expects constructing T(path) to throw a nibble::Error whose message holds every fragment.
template <typename T>
void expect_refused(const fs::path& path, const std::vector<std::string>& fragments) {
  try {
    T reader(path);
    ADD_FAILURE() << "accepted " << path << ", expected an error with '" << fragments[0] << "'";
  } catch (const Error& e) {
    for (const auto& f : fragments)
      EXPECT_NE(e.message().find(f), std::string::npos)
          << "message lacks '" << f << "': " << e.message();
  }
}

struct WrittenTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<WrittenTensor> random_tensors(std::mt19937_64& rng, size_t count) {
  const DType dtypes[] = {DType::U8,  DType::I8,      DType::BF16,    DType::F16,
                          DType::F32, DType::F64,     DType::I32,     DType::I64,
                          DType::F8_E4M3, DType::F8_E5M2, DType::F8_E8M0, DType::BOOL};
  std::vector<WrittenTensor> out;
  for (size_t i = 0; i < count; ++i) {
    WrittenTensor t;
    t.name = fmt::format("layers.{}.weight_{}", i, rng() % 1000);
    t.dtype = dtypes[rng() % std::size(dtypes)];
    const size_t rank = rng() % 4;
    size_t numel = 1;
    for (size_t d = 0; d < rank; ++d) {
      t.shape.push_back(int64_t(1 + rng() % 17));
      numel *= size_t(t.shape.back());
    }
    t.bytes = random_bytes(rng, numel * dtype_size(t.dtype));
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<TensorSpec> specs_of(const std::vector<WrittenTensor>& tensors) {
  std::vector<TensorSpec> specs;
  for (const auto& t : tensors) specs.push_back(spec_of(t.name, t.dtype, t.shape, t.bytes));
  return specs;
}

void expect_same(const TensorView& view, const WrittenTensor& t) {
  EXPECT_EQ(view.name, t.name);
  EXPECT_EQ(view.dtype, t.dtype) << t.name;
  EXPECT_EQ(view.shape, t.shape) << t.name;
  ASSERT_EQ(view.nbytes, t.bytes.size()) << t.name;
  EXPECT_TRUE(t.bytes.empty() || std::memcmp(view.data, t.bytes.data(), t.bytes.size()) == 0) << t.name;
}

// ------------------------------------------------------------------------------ round trips

TEST(Safetensors, RoundTripSingleFileKeepsBytesShapesDtypesAndMetadata) {
  TempDir dir;
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  auto tensors = random_tensors(rng, 12);
  tensors.push_back({"scalar", DType::F32, {}, random_bytes(rng, 4)});
  tensors.push_back({"empty", DType::BF16, {0, 7}, {}});
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"nibble", "mxfp4 ocp"}};
  const fs::path path = dir / "a.safetensors";
  write_safetensors(path, specs_of(tensors), metadata);

  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    const TensorView* view = file.find(t.name);
    ASSERT_NE(view, nullptr) << t.name;
    expect_same(*view, t);
    EXPECT_EQ(view->file, &file.path());
  }
  // Written in order, tiled contiguously.
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_EQ(file.tensors()[i].name, tensors[i].name);
  // Data starts at an 8-byte boundary.
  const std::string bytes = read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  EXPECT_EQ(file.find("absent"), nullptr);
  try {
    file.at("absent");
    ADD_FAILURE() << "at() of an absent tensor did not throw";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("'absent'"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find(path.string()), std::string::npos) << e.message();
  }
  // No temp files left beside it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, RoundTripThroughCheckpointSingleAndSharded) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const auto tensors = random_tensors(rng, 20);
  size_t total = 0, largest = 0;
  for (const auto& t : tensors) total += t.bytes.size(), largest = std::max(largest, t.bytes.size());
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};

  for (const size_t limit : {size_t(0), total, total / 5 + 1, size_t(1)}) {
    TempDir dir;
    write_checkpoint(dir.path(), specs_of(tensors), metadata, limit);
    const bool sharded = limit != 0 && limit < total;
    EXPECT_EQ(fs::exists(dir / "model.safetensors"), !sharded) << "limit " << limit;
    EXPECT_EQ(fs::exists(dir / "model.safetensors.index.json"), sharded) << "limit " << limit;

    Checkpoint checkpoint(dir.path());
    EXPECT_EQ(checkpoint.directory(), dir.path());
    ASSERT_EQ(checkpoint.tensors().size(), tensors.size());
    for (size_t i = 1; i < checkpoint.tensors().size(); ++i)
      EXPECT_LT(checkpoint.tensors()[i - 1]->name, checkpoint.tensors()[i]->name);
    for (const auto& t : tensors) expect_same(checkpoint.at(t.name), t);
    for (const auto& file : checkpoint.files()) {
      EXPECT_EQ(file->metadata(), metadata);
      if (sharded && limit > 1) {
        size_t bytes = 0;
        for (const auto& view : file->tensors()) bytes += view.nbytes;
        EXPECT_TRUE(bytes <= limit || file->tensors().size() == 1) << file->path();
      }
    }
    if (sharded) {
      EXPECT_GT(checkpoint.files().size(), 1u);
      EXPECT_TRUE(fs::exists(dir / fmt::format("model-00001-of-{:05}.safetensors",
                                               checkpoint.files().size())));
      if (limit == 1) {
        EXPECT_EQ(checkpoint.files().size(), tensors.size());
      }
    }
  }
}

TEST(Safetensors, CheckpointOfASingleFilePath) {
  TempDir dir;
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const auto tensors = random_tensors(rng, 3);
  write_safetensors(dir / "x.safetensors", specs_of(tensors));
  Checkpoint checkpoint(dir / "x.safetensors");
  for (const auto& t : tensors) expect_same(checkpoint.at(t.name), t);
  EXPECT_EQ(checkpoint.find("nope"), nullptr);
}

TEST(Safetensors, RewritingSwitchesLayoutWithoutStaleFiles) {
  TempDir dir;
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const auto first = random_tensors(rng, 6), second = random_tensors(rng, 6);
  write_checkpoint(dir.path(), specs_of(first));                 // single file
  write_checkpoint(dir.path(), specs_of(second), {}, 1);         // sharded: single file removed
  {
    Checkpoint checkpoint(dir.path());
    for (const auto& t : second) expect_same(checkpoint.at(t.name), t);
  }
  write_checkpoint(dir.path(), specs_of(first));                 // single again: index removed
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  Checkpoint checkpoint(dir.path());
  ASSERT_EQ(checkpoint.tensors().size(), first.size());
  for (const auto& t : first) expect_same(checkpoint.at(t.name), t);
}

std::set<std::string> file_names(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename().string());
  return names;
}

std::set<std::string> shard_names(size_t n) {
  std::set<std::string> names;
  for (size_t i = 1; i <= n; ++i) names.insert(fmt::format("model-{:05}-of-{:05}.safetensors", i, n));
  return names;
}

TEST(Safetensors, RewritingWithFewerShardsRemovesTheStaleShards) {
  TempDir dir;
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const auto six = random_tensors(rng, 6), three = random_tensors(rng, 3);
  write_bytes(dir / "notes.txt", "kept");                      // not a checkpoint file
  write_bytes(dir / "other.safetensors", "kept");              // no shard name, in no index
  const std::set<std::string> unrelated = {"notes.txt", "other.safetensors"};
  const auto expect_files = [&](std::set<std::string> names) {
    names.insert(unrelated.begin(), unrelated.end());
    EXPECT_EQ(file_names(dir.path()), names);
  };

  write_checkpoint(dir.path(), specs_of(six), {}, 1);          // one shard per tensor
  auto names = shard_names(6);
  names.insert("model.safetensors.index.json");
  expect_files(names);

  write_checkpoint(dir.path(), specs_of(three), {}, 1);        // 3 shards: the 6 old ones go
  names = shard_names(3);
  names.insert("model.safetensors.index.json");
  expect_files(names);
  {
    Checkpoint checkpoint(dir.path());
    ASSERT_EQ(checkpoint.tensors().size(), three.size());
    for (const auto& t : three) expect_same(checkpoint.at(t.name), t);
  }

  write_checkpoint(dir.path(), specs_of(six));                 // single file: shards and index go
  expect_files({"model.safetensors"});

  // A shard left by an interrupted write (no index names it) and shards named otherwise by
  // another tool's index go too; the files that index does not name stay.
  fs::remove(dir / "model.safetensors");
  write_safetensors(dir / "part-a.safetensors", specs_of({six[0]}));
  write_safetensors(dir / "model-00002-of-00007.safetensors", specs_of({six[1]}));
  write_bytes(dir / "model.safetensors.index.json",
              fmt::format(R"({{"weight_map":{{"{}":"part-a.safetensors"}}}})", six[0].name));
  write_checkpoint(dir.path(), specs_of(three), {}, 1);
  names = shard_names(3);
  names.insert("model.safetensors.index.json");
  expect_files(names);
  Checkpoint checkpoint(dir.path());
  for (const auto& t : three) expect_same(checkpoint.at(t.name), t);
}

TEST(Safetensors, TensorSpecCopyPassesATensorThrough) {
  TempDir dir;
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const auto tensors = random_tensors(rng, 4);
  write_safetensors(dir / "a.safetensors", specs_of(tensors));
  SafetensorsFile a(dir / "a.safetensors");
  std::vector<TensorSpec> copies;
  for (const auto& view : a.tensors()) copies.push_back(tensor_spec_copy(view, "copy." + view.name));
  write_safetensors(dir / "b.safetensors", copies);
  SafetensorsFile b(dir / "b.safetensors");
  for (auto t : tensors) {
    t.name = "copy." + t.name;
    expect_same(b.at(t.name), t);
  }
}

// ------------------------------------------------------------------------------ writer errors

TEST(Safetensors, FailedWriteLeavesTheOldFileAndNoTempFile) {
  TempDir dir;
  const fs::path path = dir / "model.safetensors";
  const std::vector<uint8_t> old_bytes = {1, 2, 3, 4};
  write_safetensors(path, {spec_of("old", DType::U8, {4}, old_bytes)});
  const std::string before = read_bytes(path);

  std::vector<uint8_t> big(1000, 7);
  TensorSpec failing = spec_of("bad", DType::U8, {8}, big);
  failing.fill = [](uint8_t*, size_t) { NIBBLE_THROW("quantizer failed on tensor 'bad'"); };
  EXPECT_THROW(write_safetensors(path, {spec_of("good", DType::U8, {1000}, big), failing}), Error);
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1)
      << "a temp file was left behind";
}

TEST(Safetensors, WriterRefusesBadSpecs) {
  TempDir dir;
  const std::vector<uint8_t> bytes = {1, 2};
  const auto expect_error = [&](std::vector<TensorSpec> specs, const std::string& fragment) {
    try {
      write_safetensors(dir / "w.safetensors", specs);
      ADD_FAILURE() << "accepted, expected '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(fragment), std::string::npos) << e.message();
    }
    EXPECT_FALSE(fs::exists(dir / "w.safetensors"));
  };
  expect_error({spec_of("a", DType::U8, {2}, bytes), spec_of("a", DType::U8, {2}, bytes)},
               "tensor 'a' is given twice");
  expect_error({spec_of("", DType::U8, {2}, bytes)}, "empty name");
  expect_error({spec_of("__metadata__", DType::U8, {2}, bytes)}, "not a valid tensor name");
  expect_error({spec_of("neg", DType::U8, {-2}, bytes)}, "negative dimension");
  TensorSpec no_fill = spec_of("nofill", DType::U8, {2}, bytes);
  no_fill.fill = nullptr;
  expect_error({no_fill}, "no fill function");
  EXPECT_THROW(write_checkpoint(dir / "missing_dir", {spec_of("a", DType::U8, {2}, bytes)}), Error);
}

// ------------------------------------------------------------------------------ malformed files

// `distinct` identifies the case: it must be in its message and in no other case's message.
// `fragments` are further parts its message must hold (besides the file name).
struct MalformedCase {
  const char* label;
  std::string bytes;
  std::string distinct;
  std::vector<std::string> fragments;
};

std::vector<MalformedCase> malformed_corpus() {
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, 'x');
  auto one = [&](const std::string& entry, const std::string& data) {
    return raw_file("{" + entry + "}", data);
  };
  return {
      {"empty file", "", "file is empty (0 bytes", {}},
      {"five bytes", std::string(5, '\0'), "file is 5 bytes, too short for the 8-byte header length", {}},
      {"header length past the end", raw_file("{}", "", 1000, true),
       "header length 1000 runs past the end of the file (10 bytes", {}},
      {"header length huge", raw_file("{}", "", uint64_t(1) << 62, true),
       "header length 4611686018427387904 is larger than the 100000000-byte limit", {}},
      {"header length 0", raw_file("", ""), "header length is 0", {}},
      {"bad JSON", raw_file("{\"w\":{", ""), "unexpected end of input", {"header is not valid JSON"}},
      {"invalid UTF-8", raw_file("{\"\xff\xfe\":1}", ""), "ill-formed UTF-8", {"header is not valid JSON"}},
      {"header is an array", raw_file("[1,2]", ""), "header must be a JSON object, found array", {}},
      {"entry not an object", one(R"("w":[1])", ""), "tensor 'w': entry must be an object", {"found array"}},
      {"unknown dtype", one(R"("w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]})", "x"),
       "field 'dtype': unknown dtype 'F4'", {"tensor 'w'", "F8_E8M0"}},
      {"dtype not a string", one(R"("w":{"dtype":7,"shape":[2],"data_offsets":[0,8]})", eight),
       "field 'dtype' must be a string, found number", {"tensor 'w'"}},
      {"dtype missing", one(R"("w":{"shape":[2],"data_offsets":[0,8]})", eight),
       "field 'dtype' is missing", {"tensor 'w'"}},
      {"shape missing", one(R"("w":{"dtype":"F32","data_offsets":[0,8]})", eight),
       "field 'shape' is missing", {"tensor 'w'"}},
      {"shape not an array", one(R"("w":{"dtype":"F32","shape":2,"data_offsets":[0,8]})", eight),
       "field 'shape' must be an array, found number", {"tensor 'w'"}},
      {"negative dimension", one(R"("w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", eight),
       "dimension 0 must be a non-negative integer, found -2", {"tensor 'w'", "field 'shape'"}},
      {"fractional dimension", one(R"("w":{"dtype":"F32","shape":[1,2.5],"data_offsets":[0,8]})", eight),
       "dimension 1 must be a non-negative integer, found 2.5", {"tensor 'w'", "field 'shape'"}},
      {"shape overflows", one(R"("w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})", eight),
       "field 'shape' [4294967296, 4294967296] overflows a 64-bit byte count", {"tensor 'w'"}},
      {"offsets missing", one(R"("w":{"dtype":"F32","shape":[2]})", eight),
       "field 'data_offsets' is missing", {"tensor 'w'"}},
      {"three offsets", one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]})", eight),
       "found [0,4,8]", {"tensor 'w'", "field 'data_offsets' must be two non-negative integers"}},
      {"negative offset", one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]})", eight),
       "found [-8,0]", {"tensor 'w'", "field 'data_offsets' must be two non-negative integers"}},
      {"begin after end", one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]})", eight),
       "begin 8 is after end 0", {"tensor 'w'", "field 'data_offsets'"}},
      {"offsets out of range", one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})", eight),
       "[8, 16] runs past the end of the data (8 bytes", {"tensor 'w'", "field 'data_offsets'"}},
      {"truncated data", one(ok_entry, "xxxx"), "[0, 8] runs past the end of the data (4 bytes",
       {"tensor 'w'", "field 'data_offsets'", "truncated"}},
      {"shape/bytes mismatch", one(R"("w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})", eight),
       "field 'shape' [3] of F32 needs 12 bytes but 'data_offsets' [0, 8] span 8 bytes", {"tensor 'w'"}},
      {"dtype/bytes mismatch", one(R"("w":{"dtype":"F64","shape":[2],"data_offsets":[0,8]})", eight),
       "field 'shape' [2] of F64 needs 16 bytes", {"tensor 'w'"}},
      {"overlapping offsets",
       raw_file(R"({"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", eight),
       "[4, 8] overlaps tensor 'a' (bytes [0, 6])", {"tensor 'b'"}},
      {"identical offsets",
       raw_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", eight),
       "[0, 8] overlaps tensor 'a' (bytes [0, 8])", {"tensor 'b'"}},
      {"gap between tensors",
       raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", eight),
       "leaving bytes [2, 4] of the data unused", {"tensor 'b'"}},
      {"trailing bytes", one(ok_entry, eight + "yy"), "(2 trailing bytes)", {"cover 8 bytes of data"}},
      {"duplicate tensor names",
       raw_file(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", eight),
       "header names tensor 'w' twice", {}},
      {"duplicate field",
       one(R"("w":{"dtype":"F32","dtype":"U8","shape":[2],"data_offsets":[0,8]})", eight),
       "field 'dtype' appears twice", {"tensor 'w'"}},
      {"unknown field", one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"stride":[1]})", eight),
       "unknown field 'stride'", {"tensor 'w'"}},
      {"empty tensor name", one(R"("":{"dtype":"U8","shape":[8],"data_offsets":[0,8]})", eight),
       "header has a tensor with an empty name", {}},
      {"metadata not an object", raw_file(R"({"__metadata__":[1],)" + ok_entry + "}", eight),
       "field '__metadata__' must be an object of strings, found array", {}},
      {"metadata value not a string", raw_file(R"({"__metadata__":{"step":5},)" + ok_entry + "}", eight),
       "value of 'step' must be a string, found number 5", {"field '__metadata__'"}},
  };
}

TEST(Safetensors, MalformedCorpusEachRefusedWithItsOwnMessage) {
  TempDir dir;
  const auto corpus = malformed_corpus();
  std::vector<std::string> messages;
  for (const auto& c : corpus) {
    SCOPED_TRACE(c.label);
    const fs::path path = dir / "bad.safetensors";
    write_bytes(path, c.bytes);
    std::vector<std::string> fragments = c.fragments;
    fragments.push_back(c.distinct);
    fragments.push_back(path.string());
    expect_refused<SafetensorsFile>(path, fragments);
    messages.emplace_back();
    try {
      SafetensorsFile f(path);
    } catch (const Error& e) {
      messages.back() = e.message();
    }
  }
  // Each case is told apart by its own fragment: no other case's message holds it.
  for (size_t i = 0; i < corpus.size(); ++i) {
    for (size_t j = 0; j < corpus.size(); ++j) {
      if (i == j) continue;
      EXPECT_EQ(messages[j].find(corpus[i].distinct), std::string::npos)
          << "'" << corpus[i].distinct << "' (case " << corpus[i].label << ") is also in the "
          << "message of case " << corpus[j].label << ": " << messages[j];
    }
  }
}

TEST(Safetensors, MissingFileAndDirectoryAreRefused) {
  TempDir dir;
  expect_refused<SafetensorsFile>(dir / "nope.safetensors", {"cannot open", "nope.safetensors"});
  expect_refused<SafetensorsFile>(dir.path(), {"not a regular file"});
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRefusedCleanly) {
  TempDir dir;
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<WrittenTensor> tensors = {{"a", DType::BF16, {3, 5}, random_bytes(rng, 30)},
                                              {"b", DType::U8, {7}, random_bytes(rng, 7)},
                                              {"c", DType::F32, {2}, random_bytes(rng, 8)}};
  write_safetensors(dir / "full.safetensors", specs_of(tensors), {{"k", "v"}});
  const std::string full = read_bytes(dir / "full.safetensors");
  const fs::path path = dir / "cut.safetensors";
  for (size_t n = 0; n < full.size(); ++n) {
    write_bytes(path, full.substr(0, n));
    EXPECT_THROW(SafetensorsFile f(path), Error) << "truncated to " << n << " of " << full.size();
  }
}

TEST(Safetensors, RandomHeaderCorruptionNeverCrashes) {
  TempDir dir;
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<WrittenTensor> tensors = {{"a", DType::BF16, {3, 5}, random_bytes(rng, 30)},
                                              {"b", DType::U8, {7}, random_bytes(rng, 7)},
                                              {"c", DType::F32, {2}, random_bytes(rng, 8)}};
  write_safetensors(dir / "full.safetensors", specs_of(tensors), {{"k", "v"}});
  const std::string full = read_bytes(dir / "full.safetensors");
  uint64_t header_len = 0;
  std::memcpy(&header_len, full.data(), 8);
  const fs::path path = dir / "mutant.safetensors";
  size_t refused = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string mutant = full;
    const int flips = 1 + int(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % (8 + header_len);
      mutant[at] = char(rng());
    }
    write_bytes(path, mutant);
    try {
      SafetensorsFile file(path);
      // Accepted: then every view lies inside the mapping.
      for (const auto& view : file.tensors()) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < view.nbytes; ++i) sink = sink ^ view.data[i];
      }
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 100u);
}

// ------------------------------------------------------------------------------ checkpoints

class ShardedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    const uint64_t seed = test::test_seed();
    trace_.emplace(__FILE__, __LINE__, test::seed_trace(seed));  // printed with any failure
    std::mt19937_64 rng(seed);
    a_ = random_bytes(rng, 16);
    b_ = random_bytes(rng, 16);
    write_safetensors(dir_ / "s1.safetensors", {spec_of("a", DType::U8, {16}, a_)});
    write_safetensors(dir_ / "s2.safetensors", {spec_of("b", DType::U8, {16}, b_)});
  }
  void index(const std::string& text) { write_bytes(dir_ / "model.safetensors.index.json", text); }

  std::optional<testing::ScopedTrace> trace_;
  TempDir dir_;
  std::vector<uint8_t> a_, b_;
};

TEST_F(ShardedCheckpoint, HandWrittenIndexReads) {
  index(R"({"metadata":{"total_size":32},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  Checkpoint checkpoint(dir_.path());
  ASSERT_EQ(checkpoint.tensors().size(), 2u);
  EXPECT_EQ(std::memcmp(checkpoint.at("b").data, b_.data(), 16), 0);
  EXPECT_EQ(checkpoint.files().size(), 2u);
}

TEST_F(ShardedCheckpoint, MissingShardIsNamed) {
  index(R"({"weight_map":{"a":"s1.safetensors","b":"s3.safetensors"}})");
  expect_refused<Checkpoint>(dir_.path(), {"shard 's3.safetensors'", "tensor 'b'", "missing"});
}

TEST_F(ShardedCheckpoint, TensorListedButAbsentIsNamed) {
  index(R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"}})");
  expect_refused<Checkpoint>(dir_.path(), {"tensor 'c'", "listed in shard 's2.safetensors'",
                                           "no such tensor"});
}

TEST_F(ShardedCheckpoint, TensorStoredButNotListedIsNamed) {
  index(R"({"weight_map":{"a":"s1.safetensors"}})");
  write_safetensors(dir_ / "s1.safetensors", {spec_of("a", DType::U8, {16}, a_),
                                              spec_of("extra", DType::U8, {16}, b_)});
  expect_refused<Checkpoint>(dir_.path(), {"shard 's1.safetensors'", "tensor 'extra'",
                                           "does not list"});
}

TEST_F(ShardedCheckpoint, TensorInTheWrongShardIsNamed) {
  write_safetensors(dir_ / "s2.safetensors", {spec_of("b", DType::U8, {16}, b_),
                                              spec_of("a", DType::U8, {16}, a_)});
  index(R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  expect_refused<Checkpoint>(dir_.path(), {"tensor 'a'", "also stored in shard 's2.safetensors'"});
}

TEST_F(ShardedCheckpoint, BadIndexesAreRefused) {
  index(R"({"weight_map":{"a":"s1.safetensors",)");
  expect_refused<Checkpoint>(dir_.path(), {"model.safetensors.index.json", "not valid JSON"});
  index(R"({"metadata":{}})");
  expect_refused<Checkpoint>(dir_.path(), {"field 'weight_map' is missing"});
  index(R"({"weight_map":["a"]})");
  expect_refused<Checkpoint>(dir_.path(), {"'weight_map' must be an object"});
  index(R"({"weight_map":{"a":5}})");
  expect_refused<Checkpoint>(dir_.path(), {"tensor 'a'", "must map to a file name"});
  index(R"({"weight_map":{"a":"../s1.safetensors"}})");
  expect_refused<Checkpoint>(dir_.path(), {"tensor 'a'", "not a plain file name"});
  index(R"({"weight_map":{}})");
  expect_refused<Checkpoint>(dir_.path(), {"lists no tensors"});
  index(R"({"metadata":3,"weight_map":{"a":"s1.safetensors"}})");
  expect_refused<Checkpoint>(dir_.path(), {"'metadata' must be an object"});
}

TEST_F(ShardedCheckpoint, CorruptShardIsNamed) {
  index(R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  write_bytes(dir_ / "s2.safetensors", "garbage");
  expect_refused<Checkpoint>(dir_.path(), {"s2.safetensors", "too short"});
}

TEST(Checkpoint, EmptyOrMissingDirectoryIsRefused) {
  TempDir dir;
  expect_refused<Checkpoint>(dir.path(), {"neither model.safetensors nor"});
  expect_refused<Checkpoint>(dir / "missing", {"missing", "neither a directory"});
}

}  // namespace
}  // namespace nibble
