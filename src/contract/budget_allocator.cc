// AllocateBudget: one link budget shared by several boundaries.
//
// Words used below:
//   unit    one entry of a boundary's map; it covers `block` neurons (the last may cover
//           fewer), block = ceil(cols / num_units), as SensitivityMap lays units out.
//   share   unit value / sum of the boundary's values: its step on the coverage curve.
//   cost    bytes of a unit = rows * (neurons in the unit) * bytes_per_entry.
//   ratio   share / cost: sensitivity covered per byte.
//
// 1. Floors. Each boundary takes its own units in ratio order (ties: lower unit index) until
//    it holds ceil(keep_min * cols) neurons. If the floors alone exceed the budget, every
//    boundary stays at its floor with kFloor and the total is reported as is (above budget).
// 2. Greedy. The other units with a positive share go into one max-heap by ratio (ties: lower
//    boundary, then lower unit). Units are popped and taken until the first one whose cost
//    does not fit what is left; there it stops rather than skipping ahead to a cheaper unit.
// 3. Zero-share units (of all-zero maps, or zero entries of others) add no coverage, so they
//    only get budget that is left after every positive unit was taken. That remainder is
//    handed out round-robin over the boundaries, one unit at a time in unit-index order (so
//    that no boundary is favoured for its index alone), again up to the first that does not fit.
// Both phases take a prefix of one fixed order, so more budget never lowers any keep — a
// skip-ahead would let a larger budget buy one expensive unit instead of two cheap ones of
// another boundary, and the keeps would jitter as the budget moves.
// keep = kept neurons / cols (never below keep_min); bound_by is kCeiling at keep 1, else
// kSharedBudget.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <string>

#include "sparselink/contract.hpp"

namespace sparselink {

namespace {

struct Candidate {
  double ratio;
  uint32_t boundary;
  uint32_t unit;
};

// "a before b" in greedy order: higher ratio, then lower boundary, then lower unit.
bool Before(const Candidate& a, const Candidate& b) {
  if (a.ratio != b.ratio) return a.ratio > b.ratio;
  if (a.boundary != b.boundary) return a.boundary < b.boundary;
  return a.unit < b.unit;
}

std::string Field(size_t b, std::string_view name) {
  return "demands[" + std::to_string(b) + "]." + std::string(name);
}

Status ValidateDemand(const BoundaryDemand& d, size_t b) {
  if (d.rows == 0)
    return FieldError(ErrorCode::kInvalidArgument, Field(b, "rows"), d.rows, "must be > 0");
  if (d.cols == 0)
    return FieldError(ErrorCode::kInvalidArgument, Field(b, "cols"), d.cols, "must be > 0");
  const size_t units = d.sensitivity.size();
  if (units == 0 || units > d.cols) {
    return FieldError(ErrorCode::kInvalidArgument, Field(b, "sensitivity.size"), units,
                      "must be in [1, cols = " + std::to_string(d.cols) + "]");
  }
  const size_t block = (d.cols + units - 1) / units;
  if ((d.cols + block - 1) / block != units) {
    return FieldError(
        ErrorCode::kShapeMismatch, Field(b, "sensitivity.size"), units,
        "is not ceil(cols / block) for any block (cols = " + std::to_string(d.cols) + ")");
  }
  if (!std::isfinite(d.bytes_per_entry) || d.bytes_per_entry <= 0) {
    return FieldError(ErrorCode::kInvalidArgument, Field(b, "bytes_per_entry"), d.bytes_per_entry,
                      "must be finite and > 0");
  }
  if (!std::isfinite(d.keep_min) || d.keep_min <= 0 || d.keep_min > 1) {
    return FieldError(ErrorCode::kInvalidArgument, Field(b, "keep_min"), d.keep_min,
                      "must be in (0, 1]");
  }
  for (size_t u = 0; u < units; ++u) {
    const float v = d.sensitivity[u];
    if (!std::isfinite(v)) {
      return FieldError(ErrorCode::kNonFinite, Field(b, "sensitivity[" + std::to_string(u) + "]"),
                        v, "must be finite");
    }
    if (v < 0) {
      return FieldError(ErrorCode::kInvalidArgument,
                        Field(b, "sensitivity[" + std::to_string(u) + "]"), v, "must be >= 0");
    }
  }
  return Status::Ok();
}

// Per-boundary layout and running state.
struct Boundary {
  size_t block = 1;
  double total = 0;  // sum of values
  size_t kept_neurons = 0;
  std::vector<bool> taken;  // per unit
};

size_t NeuronsIn(const BoundaryDemand& d, size_t block, size_t u) {
  return std::min(block, d.cols - u * block);
}

double CostOf(const BoundaryDemand& d, size_t block, size_t u) {
  return static_cast<double>(d.rows) * static_cast<double>(NeuronsIn(d, block, u)) *
         d.bytes_per_entry;
}

}  // namespace

Result<Allocation> AllocateBudget(std::span<const BoundaryDemand> demands, double budget_bytes) {
  if (demands.empty()) {
    return FieldError(ErrorCode::kInvalidArgument, "demands.size", 0,
                      "at least one boundary is needed");
  }
  if (!std::isfinite(budget_bytes) || budget_bytes < 0) {
    return FieldError(ErrorCode::kInvalidArgument, "budget_bytes", budget_bytes,
                      "must be finite and >= 0");
  }
  for (size_t b = 0; b < demands.size(); ++b)
    SPARSELINK_RETURN_IF_ERROR(ValidateDemand(demands[b], b));

  const size_t n = demands.size();
  std::vector<Boundary> state(n);
  std::vector<Candidate> heap_items;
  double floor_bytes = 0;
  for (size_t b = 0; b < n; ++b) {
    const BoundaryDemand& d = demands[b];
    Boundary& s = state[b];
    const size_t units = d.sensitivity.size();
    s.block = (d.cols + units - 1) / units;
    s.taken.assign(units, false);
    for (float v : d.sensitivity) s.total += v;

    std::vector<Candidate> own(units);
    for (size_t u = 0; u < units; ++u) {
      const double share = s.total > 0 ? d.sensitivity[u] / s.total : 0.0;
      own[u] = {share / CostOf(d, s.block, u), static_cast<uint32_t>(b), static_cast<uint32_t>(u)};
    }
    std::sort(own.begin(), own.end(), Before);
    // ceil(keep_min * cols), with slack so that 0.03 * 100 (= 3.0000000000000004) is 3.
    const double exact = d.keep_min * static_cast<double>(d.cols);
    const size_t floor_neurons =
        std::min(d.cols, static_cast<size_t>(std::ceil(exact * (1.0 - 1e-9) - 1e-9)));
    size_t i = 0;
    for (; i < own.size() && s.kept_neurons < floor_neurons; ++i) {
      s.taken[own[i].unit] = true;
      s.kept_neurons += NeuronsIn(d, s.block, own[i].unit);
      floor_bytes += CostOf(d, s.block, own[i].unit);
    }
    for (; i < own.size(); ++i) {
      if (own[i].ratio > 0) heap_items.push_back(own[i]);
    }
  }

  const bool below_floors = budget_bytes < floor_bytes;
  if (!below_floors) {
    double left = budget_bytes - floor_bytes;
    // std::priority_queue pops the largest under its comparator: "a after b" in greedy order.
    const auto after = [](const Candidate& a, const Candidate& b) { return Before(b, a); };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(after)> heap(
        after, std::move(heap_items));
    bool stopped = false;
    while (!heap.empty()) {
      const Candidate c = heap.top();
      const double cost = CostOf(demands[c.boundary], state[c.boundary].block, c.unit);
      if (cost > left) {
        stopped = true;
        break;
      }
      heap.pop();
      state[c.boundary].taken[c.unit] = true;
      state[c.boundary].kept_neurons +=
          NeuronsIn(demands[c.boundary], state[c.boundary].block, c.unit);
      left -= cost;
    }
    // Round-robin over zero-share units with what is left. Every positive unit is taken by
    // now, so "not taken" means "zero share".
    std::vector<size_t> next(n, 0);
    bool progress = !stopped;
    while (progress) {
      progress = false;
      for (size_t b = 0; b < n && !stopped; ++b) {
        const BoundaryDemand& d = demands[b];
        Boundary& s = state[b];
        size_t& u = next[b];
        while (u < s.taken.size() && s.taken[u]) ++u;
        if (u == s.taken.size()) continue;
        if (CostOf(d, s.block, u) > left) {
          stopped = true;
          break;
        }
        s.taken[u] = true;
        s.kept_neurons += NeuronsIn(d, s.block, u);
        left -= CostOf(d, s.block, u);
        ++u;
        progress = true;
      }
    }
  }

  Allocation out;
  out.keep.resize(n);
  out.bytes.resize(n);
  out.bound_by.resize(n);
  for (size_t b = 0; b < n; ++b) {
    const BoundaryDemand& d = demands[b];
    const size_t kept = state[b].kept_neurons;
    out.keep[b] = std::max(d.keep_min, static_cast<double>(kept) / static_cast<double>(d.cols));
    out.bytes[b] = static_cast<double>(d.rows) * static_cast<double>(kept) * d.bytes_per_entry;
    out.bound_by[b] = below_floors     ? BoundBy::kFloor
                      : kept == d.cols ? BoundBy::kCeiling
                                       : BoundBy::kSharedBudget;
    out.total_bytes += out.bytes[b];
  }
  return out;
}

}  // namespace sparselink
