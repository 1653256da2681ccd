// The link factory and the helpers every backend shares.
#include "sparselink/link.hpp"

#include <cctype>
#include <cmath>
#include <string>

#include "transport/inprocess/inprocess_link.hpp"

namespace sparselink {

Result<double> ParseBandwidth(std::string_view text) {
  // A number followed by an optional unit; bit units are decimal (1 Mbit = 1e6 bit), byte
  // units (B, kB, MB, GB) are 8 bits per byte and decimal too, as `tc` reads them.
  const std::string s(text);
  size_t pos = 0;
  double number = 0;
  try {
    number = std::stod(s, &pos);
  } catch (...) {
    return FieldError(ErrorCode::kInvalidArgument, "bandwidth", text,
                      "expected a number with a unit such as 100Mbit, 1Gbit, 12.5MB");
  }
  std::string unit = s.substr(pos);
  struct UnitScale {
    const char* name;
    double bits;
  };
  static constexpr UnitScale kUnits[] = {
      {"", 1},       {"bit", 1},    {"bps", 1},    {"kbit", 1e3}, {"Kbit", 1e3},
      {"mbit", 1e6}, {"Mbit", 1e6}, {"gbit", 1e9}, {"Gbit", 1e9}, {"B", 8},
      {"kB", 8e3},   {"KB", 8e3},   {"MB", 8e6},   {"GB", 8e9},
  };
  for (const UnitScale& u : kUnits) {
    if (unit == u.name) {
      const double bits = number * u.bits;
      if (!std::isfinite(bits) || bits <= 0) {
        return FieldError(ErrorCode::kInvalidArgument, "bandwidth", text, "must be > 0");
      }
      return bits;
    }
  }
  return FieldError(ErrorCode::kInvalidArgument, "bandwidth", text,
                    "unknown unit (use bit, kbit, Mbit, Gbit, B, kB, MB, GB)");
}

double ModelledTransferSeconds(const LinkModel& model, uint64_t wire_bytes) {
  double seconds = std::chrono::duration<double>(model.latency).count();
  if (model.bandwidth_bits_per_s > 0) {
    seconds += static_cast<double>(wire_bytes) * 8.0 / model.bandwidth_bits_per_s;
  }
  return seconds;
}

std::chrono::nanoseconds ModelledTransferTime(const LinkModel& model, uint64_t wire_bytes) {
  double serialization_ns = 0;
  if (model.bandwidth_bits_per_s > 0) {
    serialization_ns = static_cast<double>(wire_bytes) * 8.0 / model.bandwidth_bits_per_s * 1e9;
  }
  // Saturates rather than overflow (a packet over a link of a few bits per second).
  const double total_ns = static_cast<double>(model.latency.count()) + serialization_ns;
  constexpr auto kMax = std::chrono::nanoseconds::max();
  if (!(total_ns < static_cast<double>(kMax.count()))) return kMax;
  return model.latency + std::chrono::nanoseconds(std::llround(serialization_ns));
}

static Status ValidateLinkModel(const LinkModel& model) {
  if (!std::isfinite(model.bandwidth_bits_per_s) || model.bandwidth_bits_per_s < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "link.bandwidth_bits_per_s",
                      model.bandwidth_bits_per_s, "must be >= 0 (0 = unlimited)");
  }
  if (model.latency.count() < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "link.latency_ns", model.latency.count(),
                      "must be >= 0");
  }
  if (!std::isfinite(model.loss_rate) || model.loss_rate < 0 || model.loss_rate >= 1) {
    return FieldError(ErrorCode::kInvalidArgument, "link.loss_rate", model.loss_rate,
                      "must be in [0, 1)");
  }
  if (!std::isfinite(model.corrupt_rate) || model.corrupt_rate < 0 || model.corrupt_rate > 1) {
    return FieldError(ErrorCode::kInvalidArgument, "link.corrupt_rate", model.corrupt_rate,
                      "must be in [0, 1]");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Link>> MakeLink(const LinkOptions& options) {
  SPARSELINK_RETURN_IF_ERROR(ValidateLinkModel(options.model));
  if (options.max_queued_packets == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "link.max_queued_packets", 0, "must be > 0");
  }
  if (options.max_packet_bytes == 0) {
    return FieldError(ErrorCode::kInvalidArgument, "link.max_packet_bytes", 0, "must be > 0");
  }
  if (options.backend == "inprocess") {
    return std::unique_ptr<Link>(std::make_unique<InProcessLink>(options));
  }
  return FieldError(ErrorCode::kUnsupported, "link.backend", options.backend,
                    "unknown backend (built: inprocess)");
}

}  // namespace sparselink
