// Selection of the top k of n candidates (SelectTop): std::nth_element moves the k best ids
// to the front, a second nth_element moves the nf best of those to the very front, each
// group is sorted by id, and a merge of the two groups emits the kept ids ascending, each
// tagged with its tier. O(n) expected plus O(k log k).
#include <algorithm>
#include <numeric>
#include <vector>

#include "routing/select.hpp"

namespace sparselink::internal {

void SelectTopReference(const double* score, size_t n, size_t k, size_t nf,
                        std::vector<uint32_t>& order, uint32_t* ids, Tier* tiers) {
  const auto better = [score](uint32_t a, uint32_t b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  };
  order.resize(n);
  std::iota(order.begin(), order.end(), uint32_t{0});
  const auto first = order.begin();
  const auto kept_end = first + static_cast<std::ptrdiff_t>(k);
  const auto full_end = first + static_cast<std::ptrdiff_t>(nf);
  std::nth_element(first, kept_end, order.end(), better);
  std::nth_element(first, full_end, kept_end, better);
  std::sort(first, full_end);
  std::sort(full_end, kept_end);
  size_t f = 0;
  size_t l = nf;
  for (size_t i = 0; i < k; ++i) {
    const bool take_full = l == k || (f < nf && order[f] < order[l]);
    ids[i] = take_full ? order[f++] : order[l++];
    tiers[i] = take_full ? Tier::kFull : Tier::kLossy;
  }
}

}  // namespace sparselink::internal
