// The C++ side of the Python/C++ packet comparison (test_codec.py): reads rows x cols float32
// values from a file and writes the packet the C++ library makes of them, with the same
// arguments sparselink.encode takes.
//   packet_ref IN OUT ROWS COLS KEEP KEEP_FULL FULL LOSSY INDEX REST SCORING STEP SEED ZSTD
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "sparselink/codec.hpp"
#include "sparselink/routing.hpp"

namespace {

template <typename Row, size_t N>
auto Named(const std::array<Row, N>& table, const char* text) {
  const Row* row = sparselink::FindName(table, text);
  if (row == nullptr) {
    std::fprintf(stderr, "packet_ref: unknown name %s\n", text);
    std::exit(2);
  }
  return row->value;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 15) {
    std::fprintf(stderr,
                 "usage: packet_ref IN OUT ROWS COLS KEEP KEEP_FULL FULL LOSSY INDEX "
                 "REST SCORING STEP SEED ZSTD\n");
    return 2;
  }
  const size_t rows = std::stoul(argv[3]), cols = std::stoul(argv[4]);
  std::vector<float> values(rows * cols);
  std::ifstream in(argv[1], std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(values.data()),
               static_cast<std::streamsize>(values.size() * sizeof(float)))) {
    std::fprintf(stderr, "packet_ref: %s is shorter than %zu floats\n", argv[1], values.size());
    return 1;
  }
  const sparselink::Contract contract{
      .keep = std::stod(argv[5]),
      .keep_full = std::stod(argv[6]),
      .full_codec = Named(sparselink::kValueCodecTraits, argv[7]),
      .lossy_codec = Named(sparselink::kValueCodecTraits, argv[8]),
      .rest = Named(sparselink::kRestCodecNames, argv[10]),
  };
  auto router = sparselink::Router::Create(
      {.scoring = Named(sparselink::kScoringNames, argv[11]), .seed = std::stoull(argv[13])});
  if (!router.ok()) return 1;
  std::vector<uint8_t> packet;
  sparselink::RoutedTensor routed;
  const sparselink::Status s = sparselink::RouteAndEncode(
      *router, {values.data(), rows, cols}, nullptr, contract, {.step = std::stoull(argv[12])},
      {.index_codec = Named(sparselink::kIndexCodecNames, argv[9]),
       .zstd = std::string(argv[14]) == "1"},
      &routed, &packet);
  if (!s.ok()) {
    std::fprintf(stderr, "packet_ref: %s\n", s.ToString().c_str());
    return 1;
  }
  std::ofstream(argv[2], std::ios::binary)
      .write(reinterpret_cast<const char*>(packet.data()),
             static_cast<std::streamsize>(packet.size()));
  return 0;
}
