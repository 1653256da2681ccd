"""RoutedBoundary: defaults, gradients, training, reports and bad input."""
import inspect as pyinspect

import pytest
import torch

import sparselink as sl


def test_python_defaults_are_the_cpp_defaults():
    params = pyinspect.signature(sl.RoutedBoundary.__init__).parameters
    cpp = sl.default_options()
    python = {k: p.default for k, p in params.items() if k in cpp}
    assert python == cpp
    assert set(cpp) <= set(params)  # every C++ option can be set from Python


def fixed_boundary():
    # A mask that depends on x alone (magnitude scoring, fixed keep), values and gradients in
    # fp32: forward is m * x and backward m * g, up to nothing.
    return sl.RoutedBoundary(policy="magnitude", keep=0.25, keep_full=1.0, full_codec="fp32",
                             gradient_codec="fp32")


def test_jacobian_matches_finite_differences_where_the_math_allows():
    # gradcheck's own loop takes several backwards of one forward, which a boundary refuses
    # (a forward's gradient crosses back once), so the same check runs here with a fresh
    # forward per backward: the analytical Jacobian row by row against central differences in
    # float64 (the boundary computes in float32, hence the tolerance).
    torch.manual_seed(0)
    # Magnitudes far apart, so that the perturbations never change the kept set.
    x = (torch.randperm(64).double() + 1).reshape(4, 16) * torch.sign(torch.randn(4, 16)).double()
    f = lambda t: fixed_boundary()(t.float()).double()
    analytical = torch.zeros(64, 64, dtype=torch.float64)
    for i in range(64):
        t = x.clone().requires_grad_()
        v = torch.zeros(64, dtype=torch.float64)
        v[i] = 1
        f(t).reshape(-1).backward(v)
        analytical[i] = t.grad.reshape(-1)
    numerical = torch.zeros(64, 64, dtype=torch.float64)
    eps = 1e-2
    for j in range(64):
        step = torch.zeros(64, dtype=torch.float64)
        step[j] = eps
        plus, minus = x + step.reshape(4, 16), x - step.reshape(4, 16)
        with torch.no_grad():
            numerical[:, j] = ((f(plus) - f(minus)) / (2 * eps)).reshape(-1)
    torch.testing.assert_close(analytical, numerical, atol=1e-3, rtol=1e-3)
    assert analytical.diagonal().sum().item() == 16  # keep 0.25 of 64: the masked identity


def test_forward_and_backward_are_the_masked_identity_bit_for_bit():
    torch.manual_seed(1)
    x = torch.randn(32, 64, requires_grad=True)
    g = torch.randn(32, 64)
    y = fixed_boundary()(x)
    y.backward(g)
    mask = (y != 0).float()
    assert mask.sum().item() == 32 * 16
    assert torch.equal(y, x.detach() * mask)
    assert torch.equal(x.grad, g * mask)


def test_a_routed_mlp_trains_and_reports_its_bytes():
    torch.manual_seed(2)
    x = torch.randn(256, 20)
    y = (x[:, 0] > 0).long()
    boundary = sl.RoutedBoundary(negotiate_every=5)
    model = torch.nn.Sequential(torch.nn.Linear(20, 128), torch.nn.ReLU(), boundary,
                                torch.nn.Linear(128, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    r = boundary.report()
    assert boundary.steps == 29  # the 30th step ends at the next training forward
    assert r["dense_fp32_bytes"] == 30 * 2 * 256 * 128 * 4
    assert 0 < r["forward_wire_bytes"] + r["backward_wire_bytes"] < r["dense_fp32_bytes"] / 4
    assert r["history"] and 0 < r["contract"]["keep"] <= 1
    assert set(r["time"]) >= {"route_encode", "gradient_encode", "map_update"}


def test_eval_routes_without_counting():
    b = sl.RoutedBoundary(keep=0.1)
    b(torch.randn(8, 64, requires_grad=True)).sum().backward()
    before = b.report()["forward_wire_bytes"]
    b.eval()
    with torch.no_grad():
        out = b(torch.randn(8, 64))
    assert (out != 0).sum().item() == 8 * 6
    assert b.report()["forward_wire_bytes"] == before


def test_dense_policy_passes_the_tensor_through_without_a_copy():
    x = torch.randn(16, 32)
    assert sl.RoutedBoundary(policy="dense")(x).data_ptr() == x.data_ptr()


@pytest.mark.parametrize("make,error,words", [
    (lambda: sl.RoutedBoundary(keep=0.0), ValueError, "keep"),
    (lambda: sl.RoutedBoundary(policy="oracle"), ValueError, "policy = 'oracle'"),
    (lambda: sl.RoutedBoundary(gradient_codec="fp64"), ValueError, "gradient_codec = 'fp64'"),
    (lambda: sl.RoutedBoundary(negotiate_every="often"), TypeError, "negotiate_every"),
    (lambda: sl.RoutedBoundary(seed=-1), ValueError, "seed = -1"),
    (lambda: sl._sparselink.Boundary({"kepp": 0.1}), TypeError, "unknown option 'kepp'"),
])
def test_bad_options_raise_one_clear_error(make, error, words):
    with pytest.raises(error) as raised:
        make()
    assert words in str(raised.value)


@pytest.mark.parametrize("x,error,words", [
    (torch.full((4, 8), float("nan"), requires_grad=True), ValueError, "nan"),
    (torch.full((4, 8), float("inf"), requires_grad=True), ValueError, "inf"),
    (torch.ones(4, 8, dtype=torch.int64), TypeError, "torch.int64"),
    (torch.empty(4, 8, device="meta"), ValueError, "must be on the CPU, got meta"),
    (torch.ones(8), ValueError, "[N, ...]"),
    ("text", TypeError, "torch.Tensor"),
])
def test_bad_tensors_raise_one_clear_error(x, error, words):
    b = sl.RoutedBoundary(keep=0.5)
    with pytest.raises(error) as raised:
        b(x)
    assert words in str(raised.value)
    assert "Exception raised from" not in str(raised.value)  # no C++ backtrace


def test_a_shape_change_and_a_nan_gradient_are_refused():
    b = sl.RoutedBoundary(keep=0.5)
    b(torch.randn(4, 8, requires_grad=True)).sum().backward()
    with pytest.raises(ValueError, match="built for 8"):
        b(torch.randn(4, 9, requires_grad=True))
    y = b(torch.randn(4, 8, requires_grad=True))
    with pytest.raises(RuntimeError, match="nan|finite"):
        y.backward(torch.full((4, 8), float("nan")))


def test_float64_and_non_contiguous_inputs_are_routed_as_float32():
    b = sl.RoutedBoundary(policy="magnitude", keep=0.5, keep_full=1.0, full_codec="fp32")
    x = torch.randn(16, 8).t()
    assert torch.equal(b(x.contiguous()), b(x))
    y = b(x.double())
    assert y.dtype == torch.float64 and torch.equal(y, b(x).double())


def test_the_graph_outlives_the_module_that_made_it():
    x = torch.randn(8, 32, requires_grad=True)
    y = fixed_boundary()(x)  # the module is gone once this line ends
    import gc
    gc.collect()
    y.backward(torch.ones(8, 32))
    assert torch.equal(x.grad, (y != 0).float())
