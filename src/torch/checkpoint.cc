// The checkpoint file (sparselink/torch/checkpoint.hpp): its layout, the atomic write and the
// checked read. What goes into the sections is the trainer's and the pipeline's
// (run_state.cc, boundary_state.cc); this file only moves named bytes.
//
// The reader trusts nothing before the checksums: a file that is not a checkpoint must say
// so however short it is, a truncated one must say it is truncated rather than corrupt, and
// no length from the file is used before it is checked against the bytes there are.
#include "sparselink/torch/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "torch/state_bytes.hpp"

namespace sparselink::torch_adapter {
namespace {

using internal::StateReader;
using internal::StateWriter;

constexpr char kMagic[4] = {'S', 'L', 'C', 'K'};
// Header fields before the header's own checksum: magic, version, rank, world size, epoch,
// reserved (u32 each), fingerprint, payload bytes, payload checksum (u64 each).
constexpr size_t kHeaderSummedBytes = 48;
static_assert(kHeaderSummedBytes + 8 == kCheckpointHeaderBytes);
constexpr uint64_t kMaxSections = 4096;

uint64_t Xxh3(std::span<const uint8_t> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

std::string Hex(uint64_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

struct Header {
  uint32_t version = 0, rank = 0, world_size = 0, epoch = 0, reserved = 0;
  uint64_t fingerprint = 0, payload_bytes = 0, payload_checksum = 0, header_checksum = 0;
};

// Magic, size, header checksum and version: whether these are a checkpoint's bytes at all.
Result<Header> DecodeHeader(std::span<const uint8_t> bytes) {
  const size_t prefix = std::min(bytes.size(), sizeof kMagic);
  if (bytes.empty() || std::memcmp(bytes.data(), kMagic, prefix) != 0) {
    std::string start;
    for (size_t i = 0; i < prefix; ++i) start += Hex(bytes[i]).substr(2) + " ";
    return Status(ErrorCode::kInvalidArgument,
                  bytes.empty() ? std::string("empty: not a sparselink checkpoint")
                                : "not a sparselink checkpoint (it starts with " + start +
                                      "where a checkpoint has \"SLCK\")");
  }
  if (bytes.size() < kCheckpointHeaderBytes) {
    return Status(ErrorCode::kCorruptPacket,
                  "truncated: " + std::to_string(bytes.size()) + " bytes, less than the " +
                      std::to_string(kCheckpointHeaderBytes) + "-byte header");
  }
  Header h;
  StateReader r(bytes.subspan(sizeof kMagic, kCheckpointHeaderBytes - sizeof kMagic), "header");
  for (uint32_t* field : {&h.version, &h.rank, &h.world_size, &h.epoch, &h.reserved}) {
    SPARSELINK_RETURN_IF_ERROR(r.U32("field", field));
  }
  for (uint64_t* field :
       {&h.fingerprint, &h.payload_bytes, &h.payload_checksum, &h.header_checksum}) {
    SPARSELINK_RETURN_IF_ERROR(r.U64("field", field));
  }
  if (const uint64_t sum = Xxh3(bytes.first(kHeaderSummedBytes)); sum != h.header_checksum) {
    return Status(ErrorCode::kCorruptPacket, "header checksum " + Hex(h.header_checksum) +
                                                 " does not match the header's bytes (" + Hex(sum) +
                                                 "): the file is corrupt");
  }
  if (h.version != kCheckpointFormatVersion) {
    return FieldError(ErrorCode::kUnsupported, "format version", h.version,
                      "this build reads version " + std::to_string(kCheckpointFormatVersion));
  }
  return h;
}

// "key=value" lines into pairs, in order.
std::vector<std::pair<std::string, std::string>> ConfigLines(std::string_view config) {
  std::vector<std::pair<std::string, std::string>> lines;
  std::istringstream in{std::string(config)};
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    lines.emplace_back(line.substr(0, eq), eq == std::string::npos ? "" : line.substr(eq + 1));
  }
  return lines;
}

// The first setting in which this run's configuration differs from the checkpoint's.
std::string FirstDifference(std::string_view saved, std::string_view here) {
  const auto saved_lines = ConfigLines(saved);
  const std::map<std::string, std::string> saved_map(saved_lines.begin(), saved_lines.end());
  const auto here_lines = ConfigLines(here);
  const std::map<std::string, std::string> here_map(here_lines.begin(), here_lines.end());
  for (const auto& [key, value] : here_lines) {
    auto it = saved_map.find(key);
    if (it == saved_map.end()) return key + " = " + value + " here, absent from the checkpoint";
    if (it->second != value) return key + " = " + value + " here, " + it->second + " there";
  }
  for (const auto& [key, value] : saved_lines) {
    if (!here_map.contains(key)) return key + " = " + value + " there, absent here";
  }
  return "the configuration text differs";
}

Status WriteAll(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status(ErrorCode::kIo, std::string("write: ") + std::strerror(errno));
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// The bytes to `path`: written, fsync'ed and closed.
Status WriteAndSync(const std::filesystem::path& path, std::span<const uint8_t> bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status(ErrorCode::kIo, std::string("open: ") + std::strerror(errno));
  Status written = WriteAll(fd, bytes);
  if (written.ok() && ::fsync(fd) != 0) {
    written = Status(ErrorCode::kIo, std::string("fsync: ") + std::strerror(errno));
  }
  if (::close(fd) != 0 && written.ok()) {
    written = Status(ErrorCode::kIo, std::string("close: ") + std::strerror(errno));
  }
  return written;
}

}  // namespace

const std::vector<uint8_t>* Checkpoint::Find(std::string_view name) const {
  for (const auto& [key, bytes] : sections) {
    if (key == name) return &bytes;
  }
  return nullptr;
}

std::filesystem::path CheckpointPath(const std::filesystem::path& dir, int rank) {
  return dir / ("rank-" + std::to_string(rank) + ".ckpt");
}

uint64_t ConfigFingerprint(std::string_view config) {
  return XXH3_64bits(config.data(), config.size());
}

std::vector<uint8_t> EncodeCheckpoint(const Checkpoint& checkpoint) {
  StateWriter payload;
  payload.String(checkpoint.config);
  payload.U64(checkpoint.sections.size());
  for (const auto& [name, bytes] : checkpoint.sections) {
    payload.String(name);
    payload.Bytes(bytes);
  }
  const std::vector<uint8_t> body = payload.Take();
  StateWriter header;
  for (char c : kMagic) header.U8(static_cast<uint8_t>(c));
  for (uint32_t v : {kCheckpointFormatVersion, checkpoint.rank, checkpoint.world_size,
                     checkpoint.epoch, uint32_t{0}}) {
    header.U32(v);
  }
  header.U64(ConfigFingerprint(checkpoint.config));
  header.U64(body.size());
  header.U64(Xxh3(body));
  std::vector<uint8_t> out = header.Take();
  const uint64_t header_sum = Xxh3(out);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(header_sum >> (8 * i)));
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Result<Checkpoint> DecodeCheckpoint(std::span<const uint8_t> bytes) {
  SPARSELINK_ASSIGN_OR_RETURN(const Header h, DecodeHeader(bytes));
  const std::span<const uint8_t> payload = bytes.subspan(kCheckpointHeaderBytes);
  if (payload.size() != h.payload_bytes) {
    return Status(ErrorCode::kCorruptPacket,
                  payload.size() < h.payload_bytes
                      ? "truncated: " + std::to_string(payload.size()) +
                            " bytes of payload, the header declares " +
                            std::to_string(h.payload_bytes)
                      : std::to_string(payload.size() - h.payload_bytes) +
                            " bytes after the payload the header declares: the file is corrupt");
  }
  if (const uint64_t sum = Xxh3(payload); sum != h.payload_checksum) {
    return Status(ErrorCode::kCorruptPacket, "payload checksum " + Hex(h.payload_checksum) +
                                                 " does not match the payload's bytes (" +
                                                 Hex(sum) + "): the file is corrupt");
  }
  Checkpoint c{.rank = h.rank, .world_size = h.world_size, .epoch = h.epoch};
  StateReader r(payload, "payload");
  SPARSELINK_RETURN_IF_ERROR(r.String("config", &c.config));
  if (ConfigFingerprint(c.config) != h.fingerprint) {
    return Status(ErrorCode::kCorruptPacket,
                  "the configuration's fingerprint differs from the header's: the file is corrupt");
  }
  uint64_t count = 0;
  SPARSELINK_RETURN_IF_ERROR(r.U64("sections", &count));
  if (count > kMaxSections) {
    return FieldError(ErrorCode::kCorruptPacket, "payload.sections", count,
                      "more than " + std::to_string(kMaxSections));
  }
  for (uint64_t i = 0; i < count; ++i) {
    std::pair<std::string, std::vector<uint8_t>> section;
    SPARSELINK_RETURN_IF_ERROR(r.String("section name", &section.first));
    SPARSELINK_RETURN_IF_ERROR(r.Bytes("section " + section.first, &section.second));
    c.sections.push_back(std::move(section));
  }
  SPARSELINK_RETURN_IF_ERROR(r.Done());
  return c;
}

Status WriteCheckpoint(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  const auto fail = [&](const std::string& why) {
    return FieldError(ErrorCode::kIo, "checkpoint", path.string(), why);
  };
  const std::filesystem::path dir =
      path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail("cannot create its directory: " + ec.message());
  const std::filesystem::path partial = path.string() + ".partial";
  if (Status s = WriteAndSync(partial, EncodeCheckpoint(checkpoint)); !s.ok()) {
    std::filesystem::remove(partial, ec);
    return fail(partial.string() + ": " + s.message());
  }
  std::filesystem::rename(partial, path, ec);
  if (ec) return fail("rename from " + partial.string() + ": " + ec.message());
  // The rename itself is durable once the directory is.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return fail(std::string("open its directory: ") + std::strerror(errno));
  const bool synced = ::fsync(dir_fd) == 0;
  const int sync_errno = errno;
  ::close(dir_fd);
  if (!synced) return fail(std::string("fsync its directory: ") + std::strerror(sync_errno));
  return Status::Ok();
}

Result<Checkpoint> ReadCheckpoint(const std::filesystem::path& path, uint32_t rank,
                                  uint32_t world_size, std::string_view config) {
  const auto fail = [&](ErrorCode code, const std::string& why) {
    return FieldError(code, "checkpoint", path.string(), why);
  };
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) return fail(ErrorCode::kIo, "missing (no such file)");
  if (std::filesystem::is_directory(status)) return fail(ErrorCode::kIo, "is a directory");
  const uintmax_t size = std::filesystem::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in) {
    return fail(ErrorCode::kIo, "cannot be read: " + (ec ? ec.message() : std::strerror(errno)));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size))) {
    return fail(ErrorCode::kIo, "cannot be read: " + std::to_string(in.gcount()) + " of " +
                                    std::to_string(size) + " bytes");
  }
  auto checkpoint = DecodeCheckpoint(bytes);
  if (!checkpoint.ok()) return fail(checkpoint.status().code(), checkpoint.status().message());
  if (checkpoint->rank != rank || checkpoint->world_size != world_size) {
    return fail(ErrorCode::kInvalidArgument, "written by rank " + std::to_string(checkpoint->rank) +
                                                 " of " + std::to_string(checkpoint->world_size) +
                                                 ", this is rank " + std::to_string(rank) + " of " +
                                                 std::to_string(world_size));
  }
  if (checkpoint->config != config) {
    return fail(ErrorCode::kInvalidArgument,
                "written by another configuration: " + FirstDifference(checkpoint->config, config));
  }
  return checkpoint;
}

}  // namespace sparselink::torch_adapter
