// libFuzzer target: SensitivityMap::Deserialize on arbitrary bytes; a map it accepts must
// serialize back to the same bytes (the checksum aside: fuzz builds do not verify it).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "sparselink/sensitivity.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto map = sparselink::SensitivityMap::Deserialize(bytes);
  if (map.ok()) {
    const std::vector<uint8_t> again = map->Serialize();
    SPARSELINK_CHECK(again.size() == size);
    SPARSELINK_CHECK(std::equal(again.begin(), again.end() - 8, data));
  }
  return 0;
}
