// Assemble: the last step of every encoder (codec/packet_writer.hpp).
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_literalCompressionMode
#include "codec/packet_writer.hpp"

#include <zstd.h>

#include <cstring>

#include "codec/packet_layout.hpp"

namespace sparselink::internal {

RawSection ValueSection(SectionId id, ValueCodec codec, std::span<const float> values,
                        std::span<const uint32_t> row_counts) {
  RawSection section{id, {}, {}, {}, {}};
  section.pending = PendingValues{codec, values, row_counts};
  return section;
}

Status Assemble(PacketHeader header, std::vector<RawSection>& sections,
                const EncodeOptions& options, std::vector<uint8_t>* out) {
  struct Stored {
    bool zstd = false;
    std::vector<uint8_t> frame;  // the zstd frame when zstd
  };
  std::vector<Stored> stored(sections.size());
  uint64_t total = kPacketHeaderBytes + kSectionEntryBytes * sections.size() + kChecksumBytes;
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].size() > UINT32_MAX) {
      return FieldError(ErrorCode::kResourceExhausted, SectionField(i, "raw_bytes"),
                        sections[i].size(), "does not fit the 32-bit section size field");
    }
    if (options.zstd) sections[i].Materialize();
    const std::span<const uint8_t> raw = sections[i].bytes();
    if (options.zstd && !raw.empty()) {
      std::vector<uint8_t> frame(ZSTD_compressBound(raw.size()));
      // Literals are always Huffman-coded, even at the fast negative levels (which otherwise
      // store them raw): routed sections are mostly literals (bitmaps, quantized values), so
      // that is where the bytes are won. An experimental zstd parameter, stable in Debian 12's
      // libzstd 1.5.4; a library that refuses it just compresses without it.
      ZSTD_CCtx* cctx = ThreadCompressionContext();
      ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, options.zstd_level);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_literalCompressionMode, ZSTD_ps_enable);
      const size_t n = ZSTD_compress2(cctx, frame.data(), frame.size(), raw.data(), raw.size());
      if (!ZSTD_isError(n) && n < raw.size()) {
        frame.resize(n);
        stored[i] = {true, std::move(frame)};
      }
    }
    total += stored[i].zstd ? stored[i].frame.size() : sections[i].size();
  }

  // Every payload byte is written below, so only the header and the section table are
  // cleared (their reserved bytes must be 0); resize keeps whatever capacity `out` has.
  out->resize(total);
  uint8_t* p = out->data();
  std::memset(p, 0, kPacketHeaderBytes + kSectionEntryBytes * sections.size());
  Store<uint32_t>(p + kOffMagic, kPacketMagic);
  p[kOffVersion] = kWireFormatVersion;
  p[kOffKind] = static_cast<uint8_t>(header.kind);
  p[kOffGranularity] = static_cast<uint8_t>(header.granularity);
  p[kOffIndexCodec] = static_cast<uint8_t>(header.index_codec);
  p[kOffFullCodec] = static_cast<uint8_t>(header.full_codec);
  p[kOffLossyCodec] = static_cast<uint8_t>(header.lossy_codec);
  p[kOffRest] = static_cast<uint8_t>(header.rest);
  p[kOffSectionCount] = static_cast<uint8_t>(sections.size());
  Store<uint32_t>(p + kOffBoundary, header.boundary);
  Store<uint32_t>(p + kOffContractVersion, header.contract_version);
  Store<uint32_t>(p + kOffRows, header.rows);
  Store<uint32_t>(p + kOffCols, header.cols);
  Store<uint64_t>(p + kOffStep, header.step);
  Store<uint32_t>(p + kOffMicroBatch, header.micro_batch);
  Store<uint64_t>(p + kOffCountFull, header.count_full);
  Store<uint64_t>(p + kOffCountLossy, header.count_lossy);
  Store<uint64_t>(p + kOffPacketBytes, total);

  uint8_t* entry = p + kPacketHeaderBytes;
  uint8_t* payload = entry + kSectionEntryBytes * sections.size();
  for (size_t i = 0; i < sections.size(); ++i, entry += kSectionEntryBytes) {
    const RawSection& section = sections[i];
    const uint64_t raw_size = section.size();
    const uint64_t stored_size = stored[i].zstd ? stored[i].frame.size() : raw_size;
    entry[0] = static_cast<uint8_t>(section.id);
    entry[1] = stored[i].zstd ? kFlagZstd : 0;
    Store<uint32_t>(entry + 4, static_cast<uint32_t>(stored_size));
    Store<uint32_t>(entry + 8, static_cast<uint32_t>(raw_size));
    if (stored[i].zstd) {
      std::memcpy(payload, stored[i].frame.data(), stored_size);
    } else if (section.pending) {
      EncodeValues(section.pending->codec, section.pending->values, section.pending->row_counts,
                   payload, uint64_t{header.rows} * header.cols >= options.parallel_min_entries);
    } else if (section.writer) {
      section.writer->write(payload);
    } else if (raw_size > 0) {
      std::memcpy(payload, section.bytes().data(), raw_size);
    }
    payload += stored_size;
  }
  Store<uint64_t>(payload, PacketChecksum({p, total - kChecksumBytes}));
  return Status::Ok();
}

PacketHeader LabelledHeader(PacketKind kind, const PacketLabel& label) {
  PacketHeader h;
  h.kind = kind;
  h.granularity = Granularity::kElement;
  h.index_codec = IndexCodec::kAuto;
  h.full_codec = ValueCodec::kFp32;
  h.lossy_codec = ValueCodec::kFp32;
  h.rest = RestCodec::kDrop;
  h.boundary = label.boundary;
  h.contract_version = label.contract_version;
  h.step = label.step;
  h.micro_batch = label.micro_batch;
  return h;
}

}  // namespace sparselink::internal
