// `sparselink inspect`. The structural checks are the codec's own (InspectPacketPartial, then
// the full decoder of the packet's kind, or for a gradient, which only its mask decodes, every
// check that needs no mask); this file only reads the file and prints. Printing
// happens from PacketInfo, which the codec fills as far as its checks got, so a corrupt packet
// still shows its header and says which check failed.
#include "cli/inspect.hpp"

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>
#include <vector>

#include "sparselink/codec.hpp"

namespace sparselink::cli {
namespace {

constexpr uint64_t kMaxFileBytes = 1ull << 30;

Status ReadFile(const std::string& path, std::vector<uint8_t>* bytes) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) {
    return Status(ErrorCode::kIo,
                  "cannot open: " + (ec ? ec.message() : std::string("no such file")));
  }
  if (!std::filesystem::is_regular_file(st)) return Status(ErrorCode::kIo, "not a regular file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return Status(ErrorCode::kIo, "cannot read its size: " + ec.message());
  if (size > kMaxFileBytes) {
    return FieldError(ErrorCode::kResourceExhausted, "file size", size,
                      "larger than the 1 GiB a packet may have");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(ErrorCode::kIo, "cannot open for reading");
  bytes->resize(size);
  if (size > 0 &&
      !in.read(reinterpret_cast<char*>(bytes->data()), static_cast<std::streamsize>(size))) {
    return Status(ErrorCode::kIo, "read failed after " + std::to_string(in.gcount()) + " bytes");
  }
  return Status::Ok();
}

// Enum names that survive values outside the enum (a corrupt header is still printed).
template <typename E, typename F>
std::string Name(E value, size_t count, F name_of) {
  const auto raw = static_cast<size_t>(value);
  if (raw < count) return std::string(name_of(value));
  return "unknown(" + std::to_string(raw) + ")";
}
std::string CodecName(ValueCodec c) {
  return Name(c, kNumValueCodecs, [](ValueCodec v) { return Traits(v).name; });
}
std::string KindName(PacketKind k) { return Name(k, kNumPacketKinds, PacketKindName); }
std::string GranName(Granularity g) { return Name(g, kNumGranularities, GranularityName); }
std::string RestName(RestCodec r) { return Name(r, kNumRestCodecs, RestCodecName); }
std::string IndexName(const PacketHeader& h) {
  if (h.kind != PacketKind::kActivation && h.index_codec == IndexCodec::kAuto) return "none";
  return Name(h.index_codec, kNumIndexCodecs, IndexCodecName);
}

std::string Hex64(uint64_t v) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setw(16) << std::setfill('0') << v;
  return out.str();
}

std::string ChecksumStatus(const PacketInfo& info) {
  if (!info.checksum_checked) return "not checked";
  return info.checksum_ok ? "ok" : "BAD";
}

struct Tiers {
  struct Row {
    std::string tier;
    uint64_t count;
    std::string codec;
  };
  std::vector<Row> rows;
};

Tiers DescribeTiers(const PacketHeader& h) {
  Tiers t;
  const uint64_t entries = uint64_t{h.rows} * h.cols;
  switch (h.kind) {
    case PacketKind::kActivation: {
      t.rows.push_back({"full", h.count_full, CodecName(h.full_codec)});
      t.rows.push_back({"lossy", h.count_lossy, CodecName(h.lossy_codec)});
      const uint64_t kept = h.count_full + h.count_lossy;
      const uint64_t rest = kept <= entries ? entries - kept : 0;
      t.rows.push_back({h.rest == RestCodec::kSign1 ? "rest (sign1)" : "dropped", rest,
                        h.rest == RestCodec::kSign1 ? "1 bit + 2 fp32 centroids per row" : "-"});
      break;
    }
    case PacketKind::kGradient:
      t.rows.push_back({"gradient", h.count_full, CodecName(h.full_codec)});
      break;
    case PacketKind::kSummary:
      t.rows.push_back({"summary units", h.count_full, CodecName(h.full_codec)});
      break;
    case PacketKind::kContract:
    case PacketKind::kNegotiation: break;
  }
  return t;
}

double Ratio(const PacketInfo& info) {
  return info.dense_bytes > 0
             ? static_cast<double>(info.wire_bytes) / static_cast<double>(info.dense_bytes)
             : 0.0;
}

void PrintText(const std::string& path, const PacketInfo& info, const std::string& extra,
               const Status& status, std::ostream& out) {
  const PacketHeader& h = info.header;
  out << "packet " << path << "\n";
  out << "  format v" << int(h.version) << ", kind " << KindName(h.kind) << ", " << info.wire_bytes
      << " bytes\n";
  out << "  boundary " << h.boundary << ", contract version " << h.contract_version << ", step "
      << h.step;
  if (h.micro_batch != 0) out << ", micro-batch " << h.micro_batch;
  out << "\n";
  out << "  shape " << h.rows << " x " << h.cols << ", granularity " << GranName(h.granularity)
      << ", rest " << RestName(h.rest) << ", index " << IndexName(h) << "\n";
  const Tiers tiers = DescribeTiers(h);
  if (!tiers.rows.empty()) {
    out << "  tiers\n";
    for (const auto& row : tiers.rows) {
      out << "    " << std::left << std::setw(14) << row.tier << std::right << std::setw(12)
          << row.count << "  " << row.codec << "\n";
    }
  }
  if (!info.sections.empty()) {
    out << "  sections\n";
    for (const SectionInfo& s : info.sections) {
      out << "    " << std::left << std::setw(16) << SectionIdName(s.id) << std::right << " zstd "
          << (s.zstd ? "yes" : "no ") << "  stored " << std::setw(10) << s.stored_bytes << "  raw "
          << std::setw(10) << s.raw_bytes << "\n";
    }
  }
  if (!extra.empty()) out << "  " << extra << "\n";
  out << "  wire bytes " << info.wire_bytes << ", dense fp32 bytes " << info.dense_bytes;
  if (info.dense_bytes > 0) {
    const double ratio = Ratio(info);
    out << ", ratio " << std::fixed << std::setprecision(4) << ratio << " ("
        << std::setprecision(1);
    if (ratio <= 1.0) {
      out << 1.0 / std::max(ratio, 1e-12) << "x smaller)";
    } else {
      out << ratio << "x larger)";
    }
    out << std::defaultfloat;
  }
  out << "\n";
  if (info.decoded_bytes > 0) out << "  decoded bytes at most " << info.decoded_bytes << "\n";
  out << "  checksum " << Hex64(info.checksum) << ": " << ChecksumStatus(info) << "\n";
  out << "  status " << (status.ok() ? "ok" : status.ToString()) << "\n";
}

void PrintJson(const std::string& path, const PacketInfo& info, const std::string& extra,
               const Status& status, std::ostream& out) {
  nlohmann::json j;
  j["path"] = path;
  j["ok"] = status.ok();
  j["status"] = status.ok() ? "ok" : status.ToString();
  if (info.header_parsed) {
    const PacketHeader& h = info.header;
    j["header"] = {{"version", h.version},
                   {"kind", KindName(h.kind)},
                   {"boundary", h.boundary},
                   {"contract_version", h.contract_version},
                   {"step", h.step},
                   {"micro_batch", h.micro_batch},
                   {"rows", h.rows},
                   {"cols", h.cols},
                   {"granularity", GranName(h.granularity)},
                   {"rest", RestName(h.rest)},
                   {"index_codec", IndexName(h)},
                   {"full_codec", CodecName(h.full_codec)},
                   {"lossy_codec", CodecName(h.lossy_codec)},
                   {"count_full", h.count_full},
                   {"count_lossy", h.count_lossy}};
    nlohmann::json tiers = nlohmann::json::array();
    for (const auto& row : DescribeTiers(h).rows) {
      tiers.push_back({{"tier", row.tier}, {"count", row.count}, {"codec", row.codec}});
    }
    j["tiers"] = tiers;
    nlohmann::json sections = nlohmann::json::array();
    for (const SectionInfo& s : info.sections) {
      sections.push_back({{"id", SectionIdName(s.id)},
                          {"zstd", s.zstd},
                          {"offset", s.offset},
                          {"stored_bytes", s.stored_bytes},
                          {"raw_bytes", s.raw_bytes}});
    }
    j["sections"] = sections;
    j["dense_bytes"] = info.dense_bytes;
    j["decoded_bytes"] = info.decoded_bytes;
    j["ratio"] = Ratio(info);
    j["checksum"] = Hex64(info.checksum);
    j["checksum_status"] = ChecksumStatus(info);
    if (!extra.empty()) j["detail"] = extra;
  }
  j["wire_bytes"] = info.wire_bytes;
  out << j.dump(2) << "\n";
}

}  // namespace

int RunInspect(const std::string& path, bool json, std::ostream& out, std::ostream& err) {
  std::vector<uint8_t> bytes;
  Status status = ReadFile(path, &bytes);
  PacketInfo info;
  std::string extra;
  if (status.ok()) status = InspectPacketPartial(bytes, {}, &info);
  if (status.ok()) {
    // The structure is sound; decode the payload too, where the packet alone allows it.
    switch (info.header.kind) {
      case PacketKind::kActivation: status = DecodeActivation(bytes, {}, &info).status(); break;
      case PacketKind::kSummary: status = DecodeSummary(bytes, {}, &info).status(); break;
      case PacketKind::kContract: {
        auto contract = DecodeContract(bytes);
        status = contract.status();
        if (contract.ok()) extra = "contract " + contract->ToString();
        break;
      }
      case PacketKind::kGradient:
        // Decoding needs the activation's mask; every check that does not is run.
        status = CheckGradientValues(bytes, {}, &info);
        extra = "values checked without the mask, not decoded (that needs the activation's mask)";
        break;
      case PacketKind::kNegotiation: {
        auto proposal = DecodeProposal(bytes);
        if (proposal.ok()) {
          extra = "negotiation proposal";
        } else {
          auto counter = DecodeCounter(bytes);
          status = counter.status();
          if (counter.ok()) extra = "negotiation counter";
        }
        break;
      }
    }
  }
  if (json) {
    PrintJson(path, info, extra, status, out);
  } else if (info.header_parsed) {
    PrintText(path, info, extra, status, out);
  }
  if (!status.ok()) {
    err << "sparselink inspect: " << path << ": " << status.ToString() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace sparselink::cli
