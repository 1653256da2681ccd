// The channels one transport has opened, and the checks every backend's OpenLink makes before
// it opens another: the same errors, word for word, whichever backend the caller chose.
#pragma once

#include <cstdint>
#include <set>
#include <utility>

#include "sparselink/transport.hpp"

namespace sparselink::internal {

class OpenChannels {
 public:
  // Checks `peer` (another rank of the world), `channel` (<= kMaxChannelId), the options'
  // sizes, and that (peer, channel) is not open yet; then counts it as open.
  Status Claim(int rank, int world_size, int peer, uint32_t channel, const LinkOptions& options);

 private:
  std::set<std::pair<int, uint32_t>> opened_;
};

}  // namespace sparselink::internal
