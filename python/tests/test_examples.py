"""The examples in examples/python run as written."""
import os
import subprocess
import sys


def run(source_dir, *args):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, *args], cwd=source_dir, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_routed_sequential(source_dir):
    out = run(source_dir, "examples/python/routed_sequential.py")  # as written: one epoch
    assert "fewer bytes than dense fp32" in out
    accuracy = float(out.split("test accuracy ")[1].split(" %")[0])
    assert accuracy > 80  # a dense MLP reaches about 85 % after one epoch


def test_two_process_pipeline(source_dir):
    out = run(source_dir, "examples/python/two_process_pipeline.py")
    first, last = [float(line.split("loss ")[1].split(",")[0]) for line in out.splitlines()
                   if line.startswith("step")]
    assert last < 0.5 * first
