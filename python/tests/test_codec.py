"""The codec from Python: round trips, bytes equal to the C++ library's, and bad input."""
import subprocess

import pytest
import torch

import sparselink as sl


def test_fp32_round_trip_keeps_exactly_the_top_entries():
    torch.manual_seed(0)
    x = torch.randn(16, 100)
    packet = sl.encode(x, keep=0.25, keep_full=1.0, full_codec="fp32")
    info = sl.inspect(packet)
    assert (info["rows"], info["cols"], info["count_full"]) == (16, 100, 16 * 25)
    assert info["checksum_ok"] and info["wire_bytes"] == len(packet)
    dense = sl.decode(packet)
    kept = dense != 0
    assert kept.sum().item() == 16 * 25
    assert torch.equal(dense[kept], x[kept])  # fp32: bit for bit
    # Magnitude scoring: every kept |a| is at least every dropped one, row by row.
    for r in range(16):
        assert x[r][kept[r]].abs().min() >= x[r][~kept[r]].abs().max()


@pytest.mark.parametrize("full,lossy,keep_full,index,rest,zstd", [
    ("fp32", "int8", 1.0, "auto", "drop", False),
    ("fp16", "int8", 0.5, "bitmap", "drop", False),
    ("bf16", "int4", 0.25, "delta-varint", "sign1", False),
    ("fp16", "int8", 0.0, "auto", "drop", True),
])
def test_packets_equal_the_cpp_library_bytes(tmp_path, packet_ref, full, lossy, keep_full,
                                             index, rest, zstd):
    torch.manual_seed(3)
    x = torch.randn(64, 200) * torch.linspace(0.1, 3, 200)
    (tmp_path / "in.f32").write_bytes(x.numpy().tobytes())
    subprocess.run([packet_ref, str(tmp_path / "in.f32"), str(tmp_path / "out.pkt"), "64", "200",
                    "0.1", str(keep_full), full, lossy, index, rest, "magnitude", "7", "0",
                    "1" if zstd else "0"], check=True)
    ours = sl.encode(x, keep=0.1, keep_full=keep_full, full_codec=full, lossy_codec=lossy,
                     index_codec=index, rest=rest, step=7, zstd=zstd)
    assert ours == (tmp_path / "out.pkt").read_bytes()


def test_gradient_packets_come_back_at_the_kept_entries():
    torch.manual_seed(1)
    a = torch.randn(8, 64)
    packet = sl.encode(a, keep=0.2, keep_full=1.0)
    g = torch.randn(8, 64)
    back = sl.decode_gradient(sl.encode_gradient(g, packet, codec="fp32"), packet)
    kept = sl.decode(packet) != 0
    assert torch.equal(back[kept], g[kept]) and not back[~kept].any()


def test_a_contiguous_float32_tensor_is_read_in_place():
    x = torch.randn(32, 128)
    assert sl._sparselink._data_ptr_seen(x) == x.data_ptr()
    t = torch.randn(128, 32).t()  # a view: made contiguous, as torch's own ops do
    assert sl._sparselink._data_ptr_seen(t) != t.data_ptr()
    assert sl.decode(sl.encode(t, keep=1.0, keep_full=1.0)).equal(t)


@pytest.mark.parametrize("call,error,words", [
    (lambda: sl.encode(torch.randn(4, 8, dtype=torch.float64), keep=0.5), ValueError,
     "activation.dtype = Double"),
    (lambda: sl.encode(torch.randn(8), keep=0.5), ValueError, "activation.dim() = 1"),
    (lambda: sl.encode(torch.empty(4, 8, device="meta"), keep=0.5), ValueError,
     "activation.device = meta"),
    (lambda: sl.encode(torch.randn(4, 8), keep=0.0), ValueError, "keep"),
    (lambda: sl.encode(torch.randn(4, 8), keep=1.5), ValueError, "keep"),
    (lambda: sl.encode(torch.randn(4, 8), keep=0.5, full_codec="fp8"), ValueError,
     "full_codec = 'fp8': must be one of fp32, fp16, bf16, int8, int4"),
    (lambda: sl.encode(torch.tensor([[1.0, float("nan")]]), keep=0.5), ValueError, "nan"),
    (lambda: sl.encode(torch.tensor([[1.0, float("inf")]]), keep=0.5), ValueError, "inf"),
    (lambda: sl.encode("not a tensor", keep=0.5), TypeError, "incompatible"),
    (lambda: sl.decode(b"garbage"), ValueError, ""),
    (lambda: sl.decode("a str"), TypeError, "incompatible"),
    (lambda: sl.SensitivityMap(0), ValueError, "num_neurons"),
    (lambda: sl.SensitivityMap(8, mode="psychic"), ValueError, "mode = 'psychic'"),
])
def test_bad_input_raises_one_clear_error(call, error, words):
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value)


def test_every_truncation_and_bit_flip_of_a_packet_is_refused():
    packet = sl.encode(torch.randn(8, 32), keep=0.25)
    for n in range(len(packet)):
        with pytest.raises(ValueError):
            sl.decode(packet[:n])
    for i in range(0, len(packet), 7):
        flipped = bytearray(packet)
        flipped[i] ^= 0x10
        with pytest.raises(ValueError):
            sl.decode(bytes(flipped))


def test_sensitivity_map_scores_the_entries_encode_keeps():
    m = sl.SensitivityMap(16)
    m.assign(torch.tensor([1.0] * 4 + [0.0] * 12))
    x = torch.ones(2, 16)
    dense = sl.decode(sl.encode(x, keep=0.25, scoring="sensitivity", map=m))
    assert (dense[:, :4] != 0).all() and not dense[:, 4:].any()
    m.update(torch.randn(4, 16), torch.randn(4, 16))
    assert m.values().shape == (16,) and m.num_units == 16
    with pytest.raises(ValueError, match="finite|nan"):
        m.update(torch.full((4, 16), float("nan")), torch.randn(4, 16))
