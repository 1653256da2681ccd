// sparselink's links over the caller's torch.distributed process group, for Python: the
// transport is made from the group init_process_group gave (torch.distributed.group.WORLD or
// any group object), so sparselink adds no connections of its own.
#include <chrono>
#include <memory>
#include <optional>

#include "bindings.hpp"
#include "sparselink/torch/process_group_transport.hpp"

namespace sparselink::python {
namespace {

using std::chrono::milliseconds;

milliseconds Timeout(double seconds) {
  if (!(seconds >= 0) || seconds > 86400.0 * 365) {
    throw py::value_error("timeout = " + std::to_string(seconds) +
                          ": must be in [0, one year] seconds");
  }
  return milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

// A transport and the group it runs over (kept alive as long as the transport).
struct PyTransport {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<Transport> transport;
};

// A link, which keeps its transport alive (a transport must outlive its links).
struct PyLink {
  std::shared_ptr<PyTransport> transport;
  std::unique_ptr<Link> link;
};

py::dict StatsDict(const LinkStats& s) {
  return py::dict(
      py::arg("packets_sent") = s.packets_sent, py::arg("packets_received") = s.packets_received,
      py::arg("wire_bytes") = s.wire_bytes, py::arg("dense_bytes") = s.dense_bytes,
      py::arg("timed_bytes") = s.timed_bytes, py::arg("timed_seconds") = s.timed_seconds);
}

}  // namespace

void BindTransport(py::module_& m) {
  py::class_<PyTransport, std::shared_ptr<PyTransport>>(m, "ProcessGroupTransport")
      .def(py::init([](const c10::intrusive_ptr<c10d::ProcessGroup>& group, size_t message_bytes,
                       size_t max_messages_in_flight) {
             auto t = std::make_shared<PyTransport>();
             t->group = group;
             t->transport = ValueOrRaise(torch_adapter::MakeProcessGroupTransport(
                 group, {.message_bytes = message_bytes,
                         .max_messages_in_flight = max_messages_in_flight}));
             return t;
           }),
           py::arg("group"), py::arg("message_bytes"), py::arg("max_messages_in_flight"))
      .def_property_readonly("rank", [](const PyTransport& t) { return t.transport->rank(); })
      .def_property_readonly("world_size",
                             [](const PyTransport& t) { return t.transport->world_size(); })
      .def(
          "open_link",
          [](const std::shared_ptr<PyTransport>& t, int peer, uint32_t channel,
             uint64_t max_packet_bytes) {
            auto link = std::make_shared<PyLink>();
            link->transport = t;
            link->link = ValueOrRaise(
                t->transport->OpenLink(peer, channel, {.max_packet_bytes = max_packet_bytes}));
            return link;
          },
          py::arg("peer"), py::arg("channel"), py::arg("max_packet_bytes"));

  py::class_<PyLink, std::shared_ptr<PyLink>>(m, "Link")
      .def(
          "send",
          [](PyLink& l, const py::bytes& packet, uint64_t dense_bytes, double timeout) {
            const std::span<const uint8_t> bytes = BytesOf(packet);
            const milliseconds wait = Timeout(timeout);
            Status status;
            {
              py::gil_scoped_release release;
              status = l.link->Send(bytes, dense_bytes, wait);
            }
            ThrowIfError(status);
          },
          py::arg("packet"), py::arg("dense_bytes"), py::arg("timeout"))
      .def(
          "recv",
          [](PyLink& l, double timeout) {
            const milliseconds wait = Timeout(timeout);
            std::optional<Result<std::vector<uint8_t>>> got;
            {
              py::gil_scoped_release release;
              got.emplace(l.link->Recv(wait));
            }
            const std::vector<uint8_t> packet = ValueOrRaise(std::move(*got));
            return py::bytes(reinterpret_cast<const char*>(packet.data()), packet.size());
          },
          py::arg("timeout"))
      .def("close", [](PyLink& l) { l.link->Close(); })
      .def("stats", [](const PyLink& l) { return StatsDict(l.link->stats()); });
}

}  // namespace sparselink::python
