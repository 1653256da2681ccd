// The codec and sensitivity maps for Python: route and encode a tensor into a packet, decode a
// packet into a dense tensor, inspect one, and the per-neuron map that scores entries.
#include <cstring>
#include <optional>

#include "bindings.hpp"
#include "sparselink/codec.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"

namespace sparselink::python {
namespace {

ConstMatrix MatrixOf(const torch::Tensor& t) {
  return {t.data_ptr<float>(), static_cast<size_t>(t.size(0)), static_cast<size_t>(t.size(1))};
}

py::bytes Encode(const torch::Tensor& activation, double keep, double keep_full,
                 const std::string& full_codec, const std::string& lossy_codec,
                 const std::string& index_codec, const std::string& rest,
                 const std::string& scoring, const SensitivityMap* map, uint64_t step,
                 uint32_t boundary, uint32_t micro_batch, uint32_t contract_version, bool zstd,
                 int zstd_level, uint64_t seed) {
  const torch::Tensor a = CheckMatrix(activation, "activation");
  const Contract contract{
      .boundary = boundary,
      .version = contract_version,
      .keep = keep,
      .keep_full = keep_full,
      .full_codec = ParseName(kValueCodecTraits, full_codec, "full_codec"),
      .lossy_codec = ParseName(kValueCodecTraits, lossy_codec, "lossy_codec"),
      .rest = ParseName(kRestCodecNames, rest, "rest"),
  };
  ThrowIfError(contract.Validate());
  const Router router = ValueOrRaise(
      Router::Create({.scoring = ParseName(kScoringNames, scoring, "scoring"), .seed = seed}));
  const EncodeOptions options{
      .index_codec = ParseName(kIndexCodecNames, index_codec, "index_codec"),
      .zstd = zstd,
      .zstd_level = zstd_level};
  std::vector<uint8_t> packet;
  Status status;
  {
    py::gil_scoped_release release;
    RoutedTensor routed;
    status = RouteAndEncode(router, MatrixOf(a), map, contract,
                            {.boundary = boundary,
                             .contract_version = contract_version,
                             .step = step,
                             .micro_batch = micro_batch},
                            options, &routed, &packet);
  }
  ThrowIfError(status);
  return py::bytes(reinterpret_cast<const char*>(packet.data()), packet.size());
}

torch::Tensor Decode(const py::bytes& packet) {
  const std::span<const uint8_t> bytes = BytesOf(packet);
  const PacketInfo info = ValueOrRaise(InspectPacket(bytes));
  if (info.header.kind != PacketKind::kActivation) {
    throw py::value_error("packet.kind = " + std::string(PacketKindName(info.header.kind)) +
                          ": decode takes activation packets");
  }
  torch::Tensor out = torch::empty({info.header.rows, info.header.cols}, torch::kFloat32);
  Status status;
  {
    py::gil_scoped_release release;
    status =
        DecodeActivationToDense(bytes, {out.data_ptr<float>(), info.header.rows, info.header.cols});
  }
  ThrowIfError(status);
  return out;
}

// The routed form of an activation packet: the mask both ends of a boundary hold.
RoutedTensor MaskPacket(std::span<const uint8_t> activation_packet) {
  return ValueOrRaise(DecodeActivation(activation_packet));
}

py::bytes EncodeGradient(const torch::Tensor& gradient, const py::bytes& activation_packet,
                         const std::string& codec) {
  const torch::Tensor g = CheckMatrix(gradient, "gradient");
  const ValueCodec value_codec = ParseName(kValueCodecTraits, codec, "codec");
  const RoutedTensor routed = MaskPacket(BytesOf(activation_packet));
  if (static_cast<size_t>(g.size(0)) != routed.rows ||
      static_cast<size_t>(g.size(1)) != routed.cols) {
    throw py::value_error("gradient shape = [" + std::to_string(g.size(0)) + ", " +
                          std::to_string(g.size(1)) + "]: the activation packet is " +
                          std::to_string(routed.rows) + " x " + std::to_string(routed.cols));
  }
  KeptMask mask;
  ThrowIfError(MaskOf(routed, &mask));
  const PacketInfo info = ValueOrRaise(InspectPacket(BytesOf(activation_packet)));
  std::vector<uint8_t> packet;
  ThrowIfError(EncodeGradientFromDense(mask, MatrixOf(g), value_codec,
                                       {.boundary = info.header.boundary,
                                        .contract_version = info.header.contract_version,
                                        .step = info.header.step,
                                        .micro_batch = info.header.micro_batch},
                                       {}, &packet));
  return py::bytes(reinterpret_cast<const char*>(packet.data()), packet.size());
}

torch::Tensor DecodeGradient(const py::bytes& packet, const py::bytes& activation_packet) {
  const RoutedTensor mask = MaskPacket(BytesOf(activation_packet));
  torch::Tensor out = torch::empty({mask.rows, mask.cols}, torch::kFloat32);
  std::vector<float> values;
  ThrowIfError(DecodeGradientToDense(BytesOf(packet), mask,
                                     {out.data_ptr<float>(), mask.rows, mask.cols}, &values));
  return out;
}

py::dict Inspect(const py::bytes& packet) {
  const PacketInfo info = ValueOrRaise(InspectPacket(BytesOf(packet)));
  const PacketHeader& h = info.header;
  py::list sections;
  for (const SectionInfo& s : info.sections) {
    sections.append(py::dict(py::arg("id") = std::string(SectionIdName(s.id)),
                             py::arg("zstd") = s.zstd, py::arg("offset") = s.offset,
                             py::arg("stored_bytes") = s.stored_bytes,
                             py::arg("raw_bytes") = s.raw_bytes));
  }
  return py::dict(
      py::arg("kind") = std::string(PacketKindName(h.kind)), py::arg("version") = h.version,
      py::arg("granularity") = std::string(GranularityName(h.granularity)),
      py::arg("index_codec") = std::string(IndexCodecName(h.index_codec)),
      py::arg("full_codec") = std::string(ValueCodecName(h.full_codec)),
      py::arg("lossy_codec") = std::string(ValueCodecName(h.lossy_codec)),
      py::arg("rest") = std::string(RestCodecName(h.rest)), py::arg("boundary") = h.boundary,
      py::arg("contract_version") = h.contract_version, py::arg("step") = h.step,
      py::arg("micro_batch") = h.micro_batch, py::arg("rows") = h.rows, py::arg("cols") = h.cols,
      py::arg("count_full") = h.count_full, py::arg("count_lossy") = h.count_lossy,
      py::arg("sections") = sections, py::arg("wire_bytes") = info.wire_bytes,
      py::arg("dense_bytes") = info.dense_bytes, py::arg("checksum") = info.checksum,
      py::arg("checksum_ok") = info.checksum_ok);
}

torch::Tensor MapValues(const SensitivityMap& map) {
  const std::span<const float> v = map.values();
  torch::Tensor out = torch::empty({static_cast<int64_t>(v.size())}, torch::kFloat32);
  std::memcpy(out.data_ptr<float>(), v.data(), v.size_bytes());
  return out;
}

}  // namespace

void BindCodec(py::module_& m) {
  py::class_<SensitivityMap>(m, "SensitivityMap")
      .def(py::init([](size_t num_neurons, size_t block, const std::string& mode, double alpha,
                       double ema_decay) {
             return ValueOrRaise(
                 SensitivityMap::Create({.num_neurons = num_neurons,
                                         .block = block,
                                         .mode = ParseName(kSensitivityModeNames, mode, "mode"),
                                         .alpha = alpha,
                                         .ema_decay = ema_decay}));
           }),
           py::arg("num_neurons"), py::arg("block"), py::arg("mode"), py::arg("alpha"),
           py::arg("ema_decay"))
      .def(
          "update",
          [](SensitivityMap& map, const torch::Tensor& activation, const torch::Tensor& gradient) {
            const torch::Tensor a = CheckMatrix(activation, "activation");
            const torch::Tensor g = CheckMatrix(gradient, "gradient");
            ThrowIfError(map.Update(MatrixOf(a), MatrixOf(g)));
          },
          py::arg("activation"), py::arg("gradient"))
      .def(
          "assign",
          [](SensitivityMap& map, const torch::Tensor& values) {
            if (values.scalar_type() != torch::kFloat32 || values.dim() != 1) {
              throw py::value_error("values: must be a 1-D float32 tensor, got " +
                                    std::string(c10::toString(values.scalar_type())) + " of " +
                                    std::to_string(values.dim()) + " dimensions");
            }
            const torch::Tensor v = values.contiguous();
            ThrowIfError(map.Assign({v.data_ptr<float>(), static_cast<size_t>(v.numel())}));
          },
          py::arg("values"))
      .def("values", &MapValues)
      .def("freeze", &SensitivityMap::Freeze)
      .def_property_readonly("num_units", &SensitivityMap::num_units)
      .def_property_readonly("num_neurons", &SensitivityMap::num_neurons);

  m.def("encode", &Encode, py::arg("activation"), py::arg("keep"), py::arg("keep_full"),
        py::arg("full_codec"), py::arg("lossy_codec"), py::arg("index_codec"), py::arg("rest"),
        py::arg("scoring"), py::arg("map").none(true), py::arg("step"), py::arg("boundary"),
        py::arg("micro_batch"), py::arg("contract_version"), py::arg("zstd"), py::arg("zstd_level"),
        py::arg("seed"));
  m.def("decode", &Decode, py::arg("packet"));
  m.def("encode_gradient", &EncodeGradient, py::arg("gradient"), py::arg("activation_packet"),
        py::arg("codec"));
  m.def("decode_gradient", &DecodeGradient, py::arg("packet"), py::arg("activation_packet"));
  m.def("inspect", &Inspect, py::arg("packet"));
}

}  // namespace sparselink::python
