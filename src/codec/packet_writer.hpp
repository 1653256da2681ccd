// Writing a packet (private to src/codec): the sections an encoder hands over, raw, borrowed,
// or written where they go, and Assemble, which compresses them where asked and writes header,
// section table, payloads and trailer.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "codec/value_codecs.hpp"
#include "sparselink/codec.hpp"

namespace sparselink::internal {

// A value stream still to be encoded: Assemble writes it straight into the packet (or, to
// compress it, into the section's own bytes first). The spans outlive the Assemble call and
// do not point into its output buffer (which Assemble resizes before it reads them).
struct PendingValues {
  ValueCodec codec;
  std::span<const float> values;
  std::span<const uint32_t> row_counts;
  uint64_t bytes() const { return ValueStreamBytes(codec, values.size(), row_counts.size()); }
};

// A section of `bytes` bytes that `write` writes where they go (the int8 gradient, gathered
// and coded row by row; the subset bitmap, packed row by row). `write` may read and write back
// unchanged the 8 bytes after them (a packet always has its checksum there).
struct PendingWrite {
  uint64_t bytes;
  std::function<void(uint8_t*)> write;
};

// A section before compression: its own bytes, or a view of bytes the caller keeps alive
// until Assemble returns (the router's bitmap, which would otherwise be copied once more), or
// a value stream encoded where it goes (the fp16 values of a routed activation would
// otherwise be written, zeroed first, into a buffer of their own and copied once more), or
// bytes a function writes where they go.
struct RawSection {
  SectionId id;
  std::vector<uint8_t> raw;
  std::span<const uint8_t> borrowed;
  std::optional<PendingValues> pending;
  std::optional<PendingWrite> writer;
  std::span<const uint8_t> bytes() const {
    return borrowed.empty() ? std::span<const uint8_t>(raw) : borrowed;
  }
  uint64_t size() const {
    return pending ? pending->bytes() : writer ? writer->bytes : bytes().size();
  }
  // The pending values or writes into `raw` (to compress them).
  void Materialize() {
    if (pending) {
      AppendValues(pending->codec, pending->values, pending->row_counts, &raw);
      pending.reset();
    }
    if (writer) {
      raw.resize(writer->bytes + 8);
      writer->write(raw.data());
      raw.resize(writer->bytes);
      writer.reset();
    }
  }
};

// A section of the given value stream, encoded by Assemble.
RawSection ValueSection(SectionId id, ValueCodec codec, std::span<const float> values,
                        std::span<const uint32_t> row_counts);

// The header of a packet that carries no routed tensor (summary, contract, negotiation): kind
// and label, every codec field at its neutral value.
PacketHeader LabelledHeader(PacketKind kind, const PacketLabel& label);

// Writes header, table, payloads and trailer into *out. Sections are in final order; with
// options.zstd each is replaced by its zstd frame where that is strictly smaller.
Status Assemble(PacketHeader header, std::vector<RawSection>& sections,
                const EncodeOptions& options, std::vector<uint8_t>* out);

}  // namespace sparselink::internal
