// `sparselink inspect`: what a packet file holds, without trusting it.
#pragma once

#include <ostream>
#include <string>

namespace sparselink::cli {

// Reads the packet at `path` (refusing files over 1 GiB before reading) and prints its header,
// tiers with counts and codecs, each section (id, zstd, stored/raw bytes), wire bytes against
// dense fp32 bytes, and the checksum status (ok/BAD) to `out`; with `json`, the same as one
// JSON object. Returns 0 when the packet decodes fully, else 1 with the one line
// "sparselink inspect: <path>: <status>" on `err` (still printing what could be read once the
// header parsed). Gradient packets are checked up to their value stream's size (decoding their
// values needs the activation's mask, which a file does not carry). Allocates the file's size.
int RunInspect(const std::string& path, bool json, std::ostream& out, std::ostream& err);

}  // namespace sparselink::cli
