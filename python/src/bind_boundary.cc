// RoutedBoundaries for Python: one boundary per object (sparselink.RoutedBoundary wraps it in a
// torch.nn.Module). Options come as a dict of the C++ option names; the autograd function is
// the adapter's own, so backward never enters Python.
#include <chrono>
#include <memory>
#include <optional>

#include "bindings.hpp"
#include "sparselink/torch/routed_boundary.hpp"

namespace sparselink::python {
namespace {

namespace ta = torch_adapter;

double Number(const py::handle& value, const std::string& key) {
  if (!py::isinstance<py::float_>(value) && !py::isinstance<py::int_>(value)) {
    throw py::type_error(key + " = " + py::repr(value).cast<std::string>() + ": must be a number");
  }
  return value.cast<double>();
}

int64_t Integer(const py::handle& value, const std::string& key) {
  if (!py::isinstance<py::int_>(value) || py::isinstance<py::bool_>(value)) {
    throw py::type_error(key + " = " + py::repr(value).cast<std::string>() +
                         ": must be an integer");
  }
  return value.cast<int64_t>();
}

std::string Text(const py::handle& value, const std::string& key) {
  if (!py::isinstance<py::str>(value)) {
    throw py::type_error(key + " = " + py::repr(value).cast<std::string>() + ": must be a str");
  }
  return value.cast<std::string>();
}

// Applies one option; false for a name that is not an option.
bool SetOption(ta::RoutedBoundaryOptions& o, const std::string& key, const py::handle& v) {
  if (key == "policy") {
    o.policy = ParseName(ta::kRoutingPolicyNames, Text(v, key), key);
  } else if (key == "keep") {
    o.keep = v.is_none() ? std::nullopt : std::optional<double>(Number(v, key));
  } else if (key == "keep_full") {
    o.keep_full = Number(v, key);
  } else if (key == "full_codec") {
    o.full_codec = ParseName(kValueCodecTraits, Text(v, key), key);
  } else if (key == "lossy_codec") {
    o.lossy_codec = ParseName(kValueCodecTraits, Text(v, key), key);
  } else if (key == "gradient_codec") {
    o.gradient_codec = ParseName(kValueCodecTraits, Text(v, key), key);
  } else if (key == "index_codec") {
    o.index_codec = ParseName(kIndexCodecNames, Text(v, key), key);
  } else if (key == "zstd") {
    if (!py::isinstance<py::bool_>(v)) throw py::type_error("zstd: must be a bool");
    o.zstd = v.cast<bool>();
  } else if (key == "zstd_level") {
    o.zstd_level = static_cast<int>(Integer(v, key));
  } else if (key == "eps") {
    o.eps = Number(v, key);
  } else if (key == "per_channel_maps") {
    if (!py::isinstance<py::bool_>(v)) throw py::type_error("per_channel_maps: must be a bool");
    o.per_channel_maps = v.cast<bool>();
  } else if (key == "negotiate_every") {
    o.negotiate_every = static_cast<int>(Integer(v, key));
  } else if (key == "summary_every") {
    o.summary_every = static_cast<int>(Integer(v, key));
  } else if (key == "tau_send") {
    o.negotiator.tau_send = Number(v, key);
  } else if (key == "tau_recv") {
    o.negotiator.tau_recv = Number(v, key);
  } else if (key == "keep_min") {
    o.negotiator.keep_min = Number(v, key);
  } else if (key == "keep_max") {
    o.negotiator.keep_max = Number(v, key);
  } else if (key == "hysteresis") {
    o.negotiator.hysteresis = Number(v, key);
  } else if (key == "initial_keep") {
    o.initial_keep = Number(v, key);
  } else if (key == "link_budget_bytes_per_step") {
    o.link_budget_bytes_per_step = Number(v, key);
  } else if (key == "sensitivity_mode") {
    o.sensitivity_mode = ParseName(kSensitivityModeNames, Text(v, key), key);
  } else if (key == "sensitivity_alpha") {
    o.sensitivity_alpha = Number(v, key);
  } else if (key == "ema_decay") {
    o.ema_decay = Number(v, key);
  } else if (key == "link_bandwidth_bits_per_s") {
    o.link.bandwidth_bits_per_s = Number(v, key);
  } else if (key == "seed") {
    const int64_t seed = Integer(v, key);
    if (seed < 0) throw py::value_error("seed = " + std::to_string(seed) + ": must be >= 0");
    o.seed = static_cast<uint64_t>(seed);
  } else {
    return false;
  }
  return true;
}

py::dict DefaultOptions() {
  const ta::RoutedBoundaryOptions o;
  py::dict d;
  d["policy"] = std::string(ta::RoutingPolicyName(o.policy));
  d["keep"] = o.keep ? py::cast(*o.keep) : py::none();
  d["keep_full"] = o.keep_full;
  d["full_codec"] = std::string(ValueCodecName(o.full_codec));
  d["lossy_codec"] = std::string(ValueCodecName(o.lossy_codec));
  d["gradient_codec"] = std::string(ValueCodecName(o.gradient_codec));
  d["index_codec"] = std::string(IndexCodecName(o.index_codec));
  d["zstd"] = o.zstd;
  d["zstd_level"] = o.zstd_level;
  d["eps"] = o.eps;
  d["per_channel_maps"] = o.per_channel_maps;
  d["negotiate_every"] = o.negotiate_every;
  d["summary_every"] = o.summary_every;
  d["tau_send"] = o.negotiator.tau_send;
  d["tau_recv"] = o.negotiator.tau_recv;
  d["keep_min"] = o.negotiator.keep_min;
  d["keep_max"] = o.negotiator.keep_max;
  d["hysteresis"] = o.negotiator.hysteresis;
  d["initial_keep"] = o.initial_keep;
  d["link_budget_bytes_per_step"] = o.link_budget_bytes_per_step;
  d["sensitivity_mode"] = std::string(SensitivityModeName(o.sensitivity_mode));
  d["sensitivity_alpha"] = o.sensitivity_alpha;
  d["ema_decay"] = o.ema_decay;
  d["link_bandwidth_bits_per_s"] = o.link.bandwidth_bits_per_s;
  d["seed"] = o.seed;
  return d;
}

py::dict ContractDict(const Contract& c) {
  return py::dict(
      py::arg("version") = c.version, py::arg("keep") = c.keep, py::arg("keep_full") = c.keep_full,
      py::arg("full_codec") = std::string(ValueCodecName(c.full_codec)),
      py::arg("lossy_codec") = std::string(ValueCodecName(c.lossy_codec)),
      py::arg("rest") = std::string(RestCodecName(c.rest)),
      py::arg("granularity") = std::string(GranularityName(c.granularity)),
      py::arg("bound_by") = std::string(BoundByName(c.bound_by)), py::arg("text") = c.ToString());
}

torch::Tensor FloatTensor(const std::vector<float>& v) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(v.size())}, torch::kFloat32);
  std::copy(v.begin(), v.end(), t.data_ptr<float>());
  return t;
}

py::dict ReportDict(const ta::BoundaryReport& r) {
  py::dict time;
  for (const ta::BoundaryTime::Phase& p : ta::BoundaryTime::kPhases)
    time[p.name] = r.time.*p.seconds;
  py::list history;
  for (const NegotiationRecord& h : r.history) {
    history.append(py::dict(py::arg("step") = h.step, py::arg("changed") = h.changed,
                            py::arg("contract") = ContractDict(h.contract)));
  }
  return py::dict(py::arg("cols") = r.cols, py::arg("block") = r.block,
                  py::arg("forward_wire_bytes") = r.forward_wire_bytes,
                  py::arg("backward_wire_bytes") = r.backward_wire_bytes,
                  py::arg("dense_fp32_bytes") = r.dense_fp32_bytes, py::arg("packets") = r.packets,
                  py::arg("retransmits") = r.retransmits,
                  py::arg("modelled_link_seconds") = r.modelled_link_seconds,
                  py::arg("route_seconds") = r.route_seconds, py::arg("time") = time,
                  py::arg("contract") = ContractDict(r.contract), py::arg("history") = history,
                  py::arg("sensitivity") = FloatTensor(r.sensitivity));
}

// Holds the boundaries while an autograd node that points into them lives: a Python caller
// may drop the module before it calls backward on the output (the adapter's node keeps a raw
// pointer to the boundary's state, which C++ callers keep alive themselves).
struct KeepAlive final : torch::autograd::FunctionPreHook {
  explicit KeepAlive(std::shared_ptr<ta::RoutedBoundaries> b) : boundaries(std::move(b)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& grads) override {
    return grads;
  }
  std::shared_ptr<ta::RoutedBoundaries> boundaries;
};

// One boundary and its step count.
class Boundary {
 public:
  explicit Boundary(const py::dict& options) {
    ta::RoutedBoundaryOptions o;
    for (const auto& [key, value] : options) {
      const std::string name = py::str(key);
      if (!SetOption(o, name, value)) {
        throw py::type_error("RoutedBoundary got an unknown option '" + name + "'");
      }
    }
    boundaries_ = std::shared_ptr<ta::RoutedBoundaries>(
        ValueOrRaise(ta::RoutedBoundaries::Create(o, nullptr)));
  }

  torch::Tensor Forward(const torch::Tensor& activation, bool training) {
    return WithTorchErrors([&] {
      py::gil_scoped_release release;
      return ForwardNoGil(activation, training);
    });
  }
  void StepEnd() {
    WithTorchErrors([&] {
      py::gil_scoped_release release;
      boundaries_->OnStepEnd(step_);
    });
    step_ += 1;
  }
  // For C++ loops that hold no GIL.
  torch::Tensor ForwardNoGil(const torch::Tensor& activation, bool training) {
    torch::Tensor out = boundaries_->Forward(0, activation, training);
    if (const std::shared_ptr<torch::autograd::Node>& node = out.grad_fn();
        node && out.data_ptr() != activation.data_ptr()) {
      node->add_pre_hook(std::make_unique<KeepAlive>(boundaries_));
    }
    return out;
  }
  void StepEndNoGil() { boundaries_->OnStepEnd(step_++); }
  void Freeze(bool frozen) { boundaries_->SetFrozen(frozen); }
  py::object Report() const {
    const std::vector<ta::BoundaryReport> all = boundaries_->Report();
    if (all.empty()) return py::none();  // no forward yet
    py::dict d = ReportDict(all.front());
    d["steps"] = step_;
    return d;
  }
  int64_t steps() const { return step_; }

 private:
  std::shared_ptr<ta::RoutedBoundaries> boundaries_;
  int64_t step_ = 0;
};

// Seconds per training call of a boundary driven from C++ alone (forward, backward with a
// fixed upstream gradient, step end), over `calls` after `warmup`: the baseline that the
// Python module's overhead is measured against (scripts/python-overhead.py).
double TimeCppCalls(const py::dict& options, int64_t rows, int64_t cols, int64_t warmup,
                    int64_t calls) {
  Boundary boundary(options);
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({rows, cols}).requires_grad_();
  const torch::Tensor g = torch::randn({rows, cols});
  py::gil_scoped_release release;
  const auto run = [&](int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const torch::Tensor y = boundary.ForwardNoGil(x, true);
      torch::autograd::backward({y}, {g});
      boundary.StepEndNoGil();
    }
  };
  run(warmup);
  const auto start = std::chrono::steady_clock::now();
  run(calls);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
         static_cast<double>(calls);
}

}  // namespace

void BindBoundary(py::module_& m) {
  py::class_<Boundary>(m, "Boundary")
      .def(py::init<const py::dict&>(), py::arg("options"))
      .def("forward", &Boundary::Forward, py::arg("activation"), py::arg("training"))
      .def("step_end", &Boundary::StepEnd)
      .def("freeze", &Boundary::Freeze, py::arg("frozen"))
      .def("report", &Boundary::Report)
      .def_property_readonly("steps", &Boundary::steps);
  m.def("default_options", &DefaultOptions);
  m.def("_time_cpp_calls", &TimeCppCalls, py::arg("options"), py::arg("rows"), py::arg("cols"),
        py::arg("warmup"), py::arg("calls"));
}

}  // namespace sparselink::python
