"""Insert routed boundaries into an existing nn.Sequential and train it (Fashion-MNIST).

    /usr/bin/python3 examples/python/routed_sequential.py [--epochs 1] [--steps N]
"""
import argparse, gzip, numpy as np, torch, sparselink as sl

def idx(name):  # the idx files of Debian's dataset-fashion-mnist
    with gzip.open(f"/usr/share/datasets/fashion-mnist/{name}-ubyte.gz") as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=16 if "images" in name else 8)

ap = argparse.ArgumentParser(); ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--steps", type=int, default=0); args = ap.parse_args()
torch.manual_seed(1)
x = torch.tensor(idx("train-images-idx3").reshape(-1, 784), dtype=torch.float32) / 255
y = torch.tensor(idx("train-labels-idx1"), dtype=torch.long)
tx = torch.tensor(idx("t10k-images-idx3").reshape(-1, 784), dtype=torch.float32) / 255
ty = torch.tensor(idx("t10k-labels-idx1"), dtype=torch.long)
model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                            torch.nn.ReLU(), torch.nn.Linear(1024, 10))
# The one change: a routed boundary after each hidden layer (negotiated keep, int8 values).
layers = list(model)
model = torch.nn.Sequential(*layers[:2], sl.RoutedBoundary(seed=1), *layers[2:4],
                            sl.RoutedBoundary(seed=2), layers[4])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(args.epochs):
    for step, i in enumerate(torch.randperm(len(x)).split(128)):
        if args.steps and step == args.steps: break
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(x[i]), y[i]).backward(); opt.step()
    with torch.no_grad():
        accuracy = (model.eval()(tx).argmax(1) == ty).float().mean().item() * 100; model.train()
    reports = [m.report() for m in model if isinstance(m, sl.RoutedBoundary)]
    wire = sum(r["forward_wire_bytes"] + r["backward_wire_bytes"] for r in reports)
    dense = sum(r["dense_fp32_bytes"] for r in reports)
    print(f"epoch {epoch + 1}: test accuracy {accuracy:.2f} %, {dense / wire:.1f}x fewer bytes "
          f"than dense fp32, keep {[round(r['contract']['keep'] * 100, 1) for r in reports]} %")
