// idx reader: see include/sparselink/idx.hpp for the format and the checks.
//
// The bytes come through a ByteSource: plain bytes, or a gzip stream inflated on demand (zlib
// inflate with gzip framing, member after member). The parser reads the 8- or 16-byte header,
// checks magic, dims and count, then reads the payload in chunks of at most 1 MiB, growing the
// payload as the bytes really arrive: a header that claims a million images in a 40-byte file
// costs one chunk, not 822 MB. A final one-byte read must find the end of the input (for gzip
// that read also makes inflate verify the last member's CRC and length).
#include "sparselink/idx.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

namespace sparselink {
namespace {

constexpr uint32_t kImagesMagic = 2051;
constexpr uint32_t kLabelsMagic = 2049;
constexpr size_t kChunkBytes = size_t{1} << 20;

// "<name>: <field>", the field of every message about a file.
std::string Field(std::string_view name, std::string_view field) {
  return std::string(name) + ": " + std::string(field);
}

uint32_t BigEndian32(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

// A forward-only stream of bytes. Read returns how many bytes it put in `out` (fewer than
// asked only at the end of the input) or an error naming what was being read (`what`).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual Result<size_t> Read(uint8_t* out, size_t size, const char* what) = 0;
};

class PlainSource final : public ByteSource {
 public:
  explicit PlainSource(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  Result<size_t> Read(uint8_t* out, size_t size, const char* /*what*/) override {
    const size_t n = std::min(size, bytes_.size());
    if (n > 0) std::memcpy(out, bytes_.data(), n);
    bytes_ = bytes_.subspan(n);
    return n;
  }

 private:
  std::span<const uint8_t> bytes_;
};

// Inflates gzip members one after the other. After a member's end the remaining input must be
// empty or start another member (magic 1f 8b); inflate checks each member's header, CRC-32 and
// length.
class GzipSource final : public ByteSource {
 public:
  GzipSource(std::span<const uint8_t> bytes, std::string_view name) : name_(name) {
    stream_.next_in = const_cast<Bytef*>(bytes.data());
    stream_.avail_in = static_cast<uInt>(bytes.size());  // callers bound the size below 4 GiB
    ok_ = inflateInit2(&stream_, 16 + MAX_WBITS) == Z_OK;
  }
  ~GzipSource() override {
    if (ok_) inflateEnd(&stream_);
  }
  GzipSource(const GzipSource&) = delete;
  GzipSource& operator=(const GzipSource&) = delete;

  Result<size_t> Read(uint8_t* out, size_t size, const char* what) override {
    if (!ok_) return FieldError(ErrorCode::kIo, Field(name_, "gzip"), "zlib", "inflateInit failed");
    size_t done = 0;
    while (done < size) {
      if (member_ended_) {
        if (stream_.avail_in == 0) break;  // the end of the input
        if (stream_.avail_in < 2 || stream_.next_in[0] != 0x1f || stream_.next_in[1] != 0x8b) {
          return FieldError(ErrorCode::kIo, Field(name_, "gzip"), "trailing bytes",
                            std::to_string(stream_.avail_in) +
                                " bytes after the end of the gzip stream are not a gzip member");
        }
        inflateReset(&stream_);
        member_ended_ = false;
      }
      const auto room = static_cast<uInt>(std::min<size_t>(size - done, UINT_MAX));
      stream_.next_out = out + done;
      stream_.avail_out = room;
      const int rc = inflate(&stream_, Z_NO_FLUSH);
      done += room - stream_.avail_out;
      if (rc == Z_STREAM_END) {
        member_ended_ = true;
      } else if (rc == Z_BUF_ERROR) {
        // No progress was possible: out of input, or (never in a sound stream) stuck with some.
        if (stream_.avail_in == 0) {
          return FieldError(ErrorCode::kIo, Field(name_, "gzip"), "truncated",
                            std::string("the compressed stream ends inside the ") + what);
        }
        return FieldError(ErrorCode::kIo, Field(name_, "gzip"), "corrupt",
                          std::string("inflate made no progress while reading the ") + what);
      } else if (rc != Z_OK) {
        return FieldError(ErrorCode::kIo, Field(name_, "gzip"), "corrupt",
                          std::string("inflate failed while reading the ") + what + ": " +
                              (stream_.msg != nullptr ? stream_.msg : zError(rc)));
      }
    }
    return done;
  }

 private:
  std::string_view name_;
  z_stream stream_{};
  bool ok_ = false;
  bool member_ended_ = false;
};

// Reads exactly `size` bytes into `out`, growing it chunk by chunk as the bytes arrive.
Status ReadExactly(ByteSource& source, std::string_view name, const char* what, uint64_t size,
                   std::vector<uint8_t>* out) {
  out->clear();
  while (out->size() < size) {
    const size_t old_size = out->size();
    const size_t want = static_cast<size_t>(std::min<uint64_t>(size - old_size, kChunkBytes));
    out->resize(old_size + want);
    SPARSELINK_ASSIGN_OR_RETURN(const size_t got, source.Read(out->data() + old_size, want, what));
    out->resize(old_size + got);
    if (got < want) break;
  }
  if (out->size() < size) {
    return FieldError(ErrorCode::kIo, Field(name, what), out->size(),
                      "truncated: expected " + std::to_string(size));
  }
  return Status::Ok();
}

// The input must end right after the payload.
Status CheckEnd(ByteSource& source, std::string_view name, int header_bytes,
                uint64_t payload_bytes) {
  uint8_t extra = 0;
  SPARSELINK_ASSIGN_OR_RETURN(const size_t got, source.Read(&extra, 1, "end of the file"));
  if (got > 0) {
    return FieldError(ErrorCode::kIo, Field(name, "trailing bytes"), ">= 1",
                      "expected the end of the file after the " + std::to_string(header_bytes) +
                          "-byte header and " + std::to_string(payload_bytes) + " payload bytes");
  }
  return Status::Ok();
}

Status CheckOptions(const IdxOptions& options) {
  if (options.max_count < 0 || options.max_count > kIdxMaxCount) {
    return FieldError(ErrorCode::kInvalidArgument, "idx.max_count", options.max_count,
                      "must be in [0, " + std::to_string(kIdxMaxCount) + "]");
  }
  if (options.expected_count < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "expected_count", options.expected_count,
                      "must be >= 0 (0 = any)");
  }
  if (options.kind == IdxKind::kImages &&
      (options.rows == 0 || options.cols == 0 || options.rows > 4096 || options.cols > 4096)) {
    return FieldError(ErrorCode::kInvalidArgument, "idx.dims",
                      std::to_string(options.rows) + "x" + std::to_string(options.cols),
                      "must be in [1, 4096] each");
  }
  if (options.kind != IdxKind::kImages && options.kind != IdxKind::kLabels) {
    return FieldError(ErrorCode::kInvalidArgument, "idx.kind", int{uint8_t(options.kind)},
                      "unknown kind");
  }
  return Status::Ok();
}

Status CheckCount(std::string_view name, int64_t count, const IdxOptions& options) {
  if (count > options.max_count) {
    return FieldError(
        ErrorCode::kResourceExhausted, Field(name, "count"), count,
        "more than " + std::to_string(options.max_count) + " items; refusing to allocate");
  }
  if (options.expected_count > 0 && count != options.expected_count) {
    return FieldError(ErrorCode::kShapeMismatch, Field(name, "count"), count,
                      "expected " + std::to_string(options.expected_count));
  }
  return Status::Ok();
}

}  // namespace

Result<IdxData> ParseIdx(std::span<const uint8_t> bytes, std::string_view name,
                         const IdxOptions& options) {
  SPARSELINK_RETURN_IF_ERROR(CheckOptions(options));
  if (bytes.size() > UINT_MAX) {
    return FieldError(ErrorCode::kResourceExhausted, Field(name, "size"), bytes.size(),
                      "idx input above 4 GiB");
  }
  PlainSource plain(bytes);
  std::optional<GzipSource> gzip;
  if (options.gzip) {
    if (bytes.size() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b) {
      return FieldError(ErrorCode::kIo, Field(name, "format"), "not gzip",
                        "expected a gzip'd idx file (.gz)");
    }
    gzip.emplace(bytes, name);
  }
  ByteSource& source = gzip ? static_cast<ByteSource&>(*gzip) : plain;

  const bool images = options.kind == IdxKind::kImages;
  const int header_bytes = images ? 16 : 8;
  std::vector<uint8_t> header;
  SPARSELINK_RETURN_IF_ERROR(
      ReadExactly(source, name, "header bytes", static_cast<uint64_t>(header_bytes), &header));
  const uint32_t magic = BigEndian32(&header[0]);
  if (magic != (images ? kImagesMagic : kLabelsMagic)) {
    return FieldError(
        ErrorCode::kUnsupported, Field(name, "magic"), magic,
        images ? "expected 2051 (idx3 ubyte images)" : "expected 2049 (idx1 ubyte labels)");
  }
  IdxData data;
  data.count = BigEndian32(&header[4]);
  if (images) {
    data.rows = BigEndian32(&header[8]);
    data.cols = BigEndian32(&header[12]);
    if (data.rows != options.rows || data.cols != options.cols) {
      return FieldError(
          ErrorCode::kShapeMismatch, Field(name, "dims"),
          std::to_string(data.rows) + "x" + std::to_string(data.cols),
          "expected " + std::to_string(options.rows) + "x" + std::to_string(options.cols));
    }
  }
  SPARSELINK_RETURN_IF_ERROR(CheckCount(name, data.count, options));
  // count <= 2^20 and dims <= 4096 each: the product fits in 2^44.
  const uint64_t payload_bytes = static_cast<uint64_t>(data.count) * data.rows * data.cols;
  SPARSELINK_RETURN_IF_ERROR(ReadExactly(source, name, images ? "pixel bytes" : "label bytes",
                                         payload_bytes, &data.payload));
  SPARSELINK_RETURN_IF_ERROR(CheckEnd(source, name, header_bytes, payload_bytes));
  if (!images) {
    for (size_t i = 0; i < data.payload.size(); ++i) {
      if (data.payload[i] >= options.num_classes) {
        return FieldError(ErrorCode::kInvalidArgument,
                          Field(name, "label[" + std::to_string(i) + "]"), int{data.payload[i]},
                          "must be < " + std::to_string(options.num_classes));
      }
    }
  }
  return data;
}

Result<IdxData> ReadIdxFile(const std::string& path, const IdxOptions& options) {
  SPARSELINK_RETURN_IF_ERROR(CheckOptions(options));
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return FieldError(ErrorCode::kIo, "path", path, "no such file");
  }
  if (std::filesystem::is_directory(path, ec)) {
    return FieldError(ErrorCode::kIo, "path", path, "is a directory");
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return FieldError(ErrorCode::kIo, "path", path, "cannot stat: " + ec.message());
  // The largest file worth reading: the largest plain file the options allow, plus gzip's
  // worst-case overhead (stored blocks: 5 bytes per 64 KiB) and some headers.
  const uint64_t rows = options.kind == IdxKind::kImages ? options.rows : 1;
  const uint64_t cols = options.kind == IdxKind::kImages ? options.cols : 1;
  const uint64_t largest = 16 + static_cast<uint64_t>(options.max_count) * rows * cols;
  const uint64_t limit = largest + largest / 1024 + 4096;
  if (size > limit) {
    return FieldError(ErrorCode::kResourceExhausted, Field(path, "size"), size,
                      "larger than any idx file of at most " + std::to_string(options.max_count) +
                          " items (" + std::to_string(limit) + " bytes)");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  errno = 0;
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return FieldError(ErrorCode::kIo, "path", path,
                      std::string("cannot open: ") + std::strerror(errno));
  }
  file.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (static_cast<uintmax_t>(file.gcount()) != size) {
    return FieldError(ErrorCode::kIo, "path", path, "read failed");
  }
  return ParseIdx(bytes, path, options);
}

}  // namespace sparselink
