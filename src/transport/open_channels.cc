#include "transport/open_channels.hpp"

#include <string>

namespace sparselink::internal {

Status OpenChannels::Claim(int rank, int world_size, int peer, uint32_t channel,
                           const LinkOptions& options) {
  if (peer < 0 || peer >= world_size || peer == rank) {
    return FieldError(ErrorCode::kInvalidArgument, "peer", peer,
                      "must be another rank in [0, " + std::to_string(world_size) + ")");
  }
  if (channel > kMaxChannelId) {
    return FieldError(ErrorCode::kInvalidArgument, "channel", channel,
                      "must be <= " + std::to_string(kMaxChannelId));
  }
  if (options.max_queued_packets == 0 || options.max_packet_bytes == 0) {
    return Status(ErrorCode::kInvalidArgument,
                  "link.max_queued_packets and link.max_packet_bytes must be > 0");
  }
  if (!opened_.insert({peer, channel}).second) {
    return FieldError(ErrorCode::kInvalidArgument, "channel", channel,
                      "already open to rank " + std::to_string(peer));
  }
  return Status::Ok();
}

}  // namespace sparselink::internal
