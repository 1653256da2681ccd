// Contract basics: validation, counts, the byte cost model.
#include "sparselink/contract.hpp"

#include <cmath>
#include <sstream>

namespace sparselink {

Result<double> KeepFromPercent(double percent, std::string_view field) {
  if (!std::isfinite(percent) || percent <= 0.0 || percent > 100.0) {
    return FieldError(ErrorCode::kInvalidArgument, field, percent,
                      "must be a percentage in (0, 100]");
  }
  return percent / 100.0;
}

// floor(n * fraction) with a relative slack of 1e-9, so that 0.3 * 10 (= 2.9999999999999996
// in binary) counts as 3. The slack is far below 1/n for any n that fits in memory.
static size_t FloorFraction(size_t n, double fraction) {
  const double exact = static_cast<double>(n) * fraction;
  const double k = std::floor(exact * (1.0 + 1e-9) + 1e-9);
  if (k <= 0) return 0;
  if (k >= static_cast<double>(n)) return n;
  return static_cast<size_t>(k);
}

size_t KeptCount(size_t n, double keep) { return FloorFraction(n, keep); }
size_t FullCount(size_t kept, double keep_full) { return FloorFraction(kept, keep_full); }

Status Contract::Validate() const {
  if (!std::isfinite(keep) || keep <= 0.0 || keep > 1.0) {
    return FieldError(ErrorCode::kInvalidArgument, "contract.keep", keep, "must be in (0, 1]");
  }
  if (!std::isfinite(keep_full) || keep_full < 0.0 || keep_full > 1.0) {
    return FieldError(ErrorCode::kInvalidArgument, "contract.keep_full", keep_full,
                      "must be in [0, 1]");
  }
  if (static_cast<size_t>(full_codec) >= kNumValueCodecs) {
    return FieldError(ErrorCode::kInvalidArgument, "contract.full_codec", int(full_codec),
                      "unknown value codec");
  }
  if (static_cast<size_t>(lossy_codec) >= kNumValueCodecs) {
    return FieldError(ErrorCode::kInvalidArgument, "contract.lossy_codec", int(lossy_codec),
                      "unknown value codec");
  }
  if (static_cast<size_t>(rest) >= kNumRestCodecs) {
    return FieldError(ErrorCode::kInvalidArgument, "contract.rest", int(rest),
                      "unknown rest codec");
  }
  if (static_cast<size_t>(granularity) >= kNumGranularities) {
    return FieldError(ErrorCode::kInvalidArgument, "contract.granularity", int(granularity),
                      "unknown granularity");
  }
  if (static_cast<size_t>(bound_by) >= kNumBoundBy) {
    return FieldError(ErrorCode::kInvalidArgument, "contract.bound_by", int(bound_by),
                      "unknown reason");
  }
  return Status::Ok();
}

std::string Contract::ToString() const {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(2);
  out << "b" << boundary << " v" << version << " keep=" << keep_percent() << "%";
  out.precision(0);
  out << " full=" << keep_full * 100 << "% " << Traits(full_codec).name << "/"
      << Traits(lossy_codec).name << " " << GranularityName(granularity) << " "
      << RestCodecName(rest) << " (" << BoundByName(bound_by) << ")";
  return out.str();
}

// LEB128 bytes of an unsigned value.
static double VarintBytes(double v) {
  double bytes = 1;
  while (v >= 128) {
    v /= 128;
    bytes += 1;
  }
  return bytes;
}

// Expected LEB128 bytes of one gap when kept positions are spread at random with density p:
// a gap is at least g with probability (1-p)^g, and takes one more byte past 2^7, 2^14, 2^21.
// (Charging every gap at the size of the mean gap undercounts at low keep, where a quarter of
// the gaps pass 127.)
static double ExpectedGapBytes(double p) {
  if (p >= 1.0) return 1.0;
  double bytes = 1.0;
  for (double g : {128.0, 16384.0, 2097152.0}) bytes += std::pow(1.0 - p, g);
  return bytes;
}

// Columns a row keeps under `keep`: with unit granularity whole units of `block` columns
// (the partial last unit priced whole), as the router keeps them.
static size_t KeptColumns(Granularity granularity, size_t cols, size_t block, double keep) {
  if (granularity != Granularity::kUnit || block <= 1) return KeptCount(cols, keep);
  const size_t units = (cols + block - 1) / block;
  return std::min(cols, KeptCount(units, keep) * block);
}

StepCostLine FitStepCost(const Contract& contract, size_t packets, size_t packet_rows, size_t cols,
                         double keep_min, ValueCodec gradient_codec, size_t block) {
  Contract probe = contract;
  const auto cost = [&](double keep) {
    probe.keep = keep;
    return static_cast<double>(packets) * EstimateStepBytes(probe, packet_rows, cols,
                                                            /*with_gradient=*/true, gradient_codec,
                                                            block);
  };
  const auto kept = [&](double keep) {
    return static_cast<double>(KeptColumns(contract.granularity, cols, block, keep));
  };
  const double rows = static_cast<double>(packets) * static_cast<double>(packet_rows);
  // Fitted between the floor and twice the floor; where that keeps no more (coarse units, or
  // a floor below one column), the upper point moves to one more unit or column.
  const double low_keep = keep_min;
  double high_keep = std::min(1.0, 2 * keep_min);
  if (kept(high_keep) <= kept(low_keep)) {
    const bool unit = contract.granularity == Granularity::kUnit && block > 1;
    const size_t n = unit ? (cols + block - 1) / block : cols;
    high_keep =
        std::min(1.0, static_cast<double>(KeptCount(n, low_keep) + 1) / static_cast<double>(n));
  }
  const double low_entries = rows * kept(low_keep);
  const double high_entries = rows * kept(high_keep);
  StepCostLine line;
  line.per_entry = high_entries > low_entries
                       ? (cost(high_keep) - cost(low_keep)) / (high_entries - low_entries)
                       : cost(high_keep) / std::max(1.0, high_entries);
  line.fixed = std::max(0.0, cost(low_keep) - line.per_entry * low_entries);
  return line;
}

double EstimateStepBytes(const Contract& contract, size_t rows, size_t cols, bool with_gradient,
                         ValueCodec gradient_codec, size_t block) {
  const bool unit = contract.granularity == Granularity::kUnit;
  // Entries per row and how many rows carry their own index set.
  const double kept_per_row =
      static_cast<double>(KeptColumns(contract.granularity, cols, block, contract.keep));
  const double index_rows = unit ? 1.0 : static_cast<double>(rows);
  const double kept_total = kept_per_row * static_cast<double>(rows);
  const auto full_per_row =
      static_cast<double>(FullCount(static_cast<size_t>(kept_per_row), contract.keep_full));
  const double full_total = full_per_row * static_cast<double>(rows);
  const double lossy_total = kept_total - full_total;

  const double bitmap = std::ceil(index_rows * static_cast<double>(cols) / 8.0);
  const double density =
      static_cast<double>(cols) > 0 ? kept_per_row / static_cast<double>(cols) : 0;
  const double delta =
      index_rows * (VarintBytes(kept_per_row) + kept_per_row * ExpectedGapBytes(density));
  double bytes = kPacketHeaderBytes + kChecksumBytes;
  int sections = 1;
  bytes += std::min(bitmap, delta);
  if (full_total > 0) {
    ++sections;
    bytes += static_cast<double>(
        ValueStreamBytes(contract.full_codec, static_cast<uint64_t>(full_total), rows));
  }
  if (lossy_total > 0) {
    ++sections;
    bytes += static_cast<double>(
        ValueStreamBytes(contract.lossy_codec, static_cast<uint64_t>(lossy_total), rows));
  }
  if (full_total > 0 && lossy_total > 0) {
    ++sections;
    bytes += std::ceil((unit ? kept_per_row : kept_total) / 8.0);
  }
  if (contract.rest == RestCodec::kSign1) {
    sections += 2;
    bytes += std::ceil((static_cast<double>(rows * cols) - kept_total) / 8.0) +
             8.0 * static_cast<double>(rows);
  }
  bytes += sections * static_cast<double>(kSectionEntryBytes);
  if (with_gradient) {
    bytes += kPacketHeaderBytes + kSectionEntryBytes + kChecksumBytes +
             static_cast<double>(
                 ValueStreamBytes(gradient_codec, static_cast<uint64_t>(kept_total), rows));
  }
  return bytes;
}

}  // namespace sparselink
