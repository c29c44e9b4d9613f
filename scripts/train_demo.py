#!/usr/bin/env python3
"""Trains the bundled demo model and writes assets/demo/.

Task: classify a noisy 1-D waveform of 100 samples as sine, square, triangle or sawtooth.
Each example has a random frequency (1.5 to 6 cycles per sequence), phase, amplitude
(0.5 to 1.5) and a random amount of Gaussian noise (standard deviation 0 to 0.25).

Model: `lstm = nn.LSTM(1, 32, num_layers=2)` (sequence-major input) and `head = nn.Linear(32, 4)`
applied to the last layer's final hidden state `h_n[-1]`.

Writes (all deterministic for a given PyTorch build; takes well under a minute on one CPU core):

    assets/demo/model.safetensors     the whole state_dict (`lstm.*`, `head.weight`, `head.bias`),
                                      f32, metadata {"mode": "LSTM"}
    assets/demo/input.safetensors     `input` (100, 64, 1) f32 test batch
    assets/demo/labels.safetensors    `labels` (64,) i64, its classes
    assets/demo/expected.safetensors  PyTorch's truth computed in float64 from exactly those f32
                                      weights and inputs: `h_n` (2, 64, 32), `c_n` (2, 64, 32) and
                                      `logits` (64, 4) as F64; `output` (100, 64, 32) as F32 (the
                                      float64 truth rounded once, |error| < 6e-8 — stored as F32 only
                                      to keep the demo under 1 MB)
    assets/demo/demo.json             task, class names, where the LSTM and head live in the file,
                                      and PyTorch's accuracy

Run with: /work/peers-venv/bin/python scripts/train_demo.py  (from the repository root)
"""

import json
import math
import os
import time

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

CLASSES = ["sine", "square", "triangle", "sawtooth"]
SEQ_LEN = 100
HIDDEN = 32
LAYERS = 2
DEMO_BATCH = 64
HELDOUT = 4096

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "assets", "demo")


def waveforms(rng: np.random.Generator, n: int):
    """Returns (x (L, n, 1) float32, labels (n,) int64)."""
    labels = rng.integers(0, len(CLASSES), size=n)
    cycles = rng.uniform(1.5, 6.0, size=(n, 1))
    phase = rng.uniform(0.0, 1.0, size=(n, 1))
    amp = rng.uniform(0.5, 1.5, size=(n, 1))
    noise = rng.uniform(0.0, 0.25, size=(n, 1))
    t = np.arange(SEQ_LEN, dtype=np.float64)[None, :] / SEQ_LEN
    u = (cycles * t + phase) % 1.0  # position within the period, in [0, 1)
    shapes = np.stack(
        [
            np.sin(2.0 * math.pi * u),
            np.where(u < 0.5, 1.0, -1.0),
            1.0 - 4.0 * np.abs(u - 0.5),
            2.0 * u - 1.0,
        ]
    )  # (4, n, L)
    clean = shapes[labels, np.arange(n)]
    x = amp * clean + noise * rng.standard_normal((n, SEQ_LEN))
    x = torch.from_numpy(x.T[:, :, None].astype(np.float32))  # (L, n, 1)
    return x, torch.from_numpy(labels.astype(np.int64))


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, HIDDEN, num_layers=LAYERS, batch_first=False)
        self.head = nn.Linear(HIDDEN, len(CLASSES))

    def forward(self, x):
        out, (h_n, c_n) = self.lstm(x)
        return self.head(h_n[-1]), out, h_n, c_n


def accuracy(model, x, labels):
    with torch.no_grad():
        logits = model(x)[0]
    return (logits.argmax(dim=1) == labels).double().mean().item()


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(1234)

    model = Classifier()
    # Forget-gate bias 1 (rows H..2H of b_ih): the usual LSTM trick, it makes training stable here.
    with torch.no_grad():
        for name, p in model.lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[HIDDEN : 2 * HIDDEN] += 1.0
    # Small batches, many updates: the cost of a step grows with the batch, so for a fixed
    # time budget more, smaller steps learn faster.
    steps, batch = 1200, 32
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()

    val_x, val_y = waveforms(np.random.default_rng(99), 1024)
    start = time.time()
    for step in range(1, steps + 1):
        x, y = waveforms(rng, batch)
        logits = model(x)[0]
        loss = loss_fn(logits, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 200 == 0:
            print(
                f"step {step:4d}  loss {loss.item():.4f}  "
                f"val accuracy {accuracy(model, val_x, val_y):.3f}  ({time.time() - start:.1f} s)"
            )
    train_seconds = time.time() - start
    model.eval()

    heldout_x, heldout_y = waveforms(np.random.default_rng(2024), HELDOUT)
    heldout_acc = accuracy(model, heldout_x, heldout_y)
    print(f"held-out accuracy ({HELDOUT} fresh examples): {heldout_acc:.4f}")

    demo_x, demo_y = waveforms(np.random.default_rng(7), DEMO_BATCH)

    # The truth: float64 PyTorch on exactly the f32 weights and inputs the engine reads.
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    model64 = Classifier()
    model64.load_state_dict(state)
    model64 = model64.double().eval()
    with torch.no_grad():
        logits, out, h_n, c_n = model64(demo_x.double())
    demo_acc = (logits.argmax(dim=1) == demo_y).double().mean().item()
    print(f"demo batch accuracy (float64 PyTorch, {DEMO_BATCH} examples): {demo_acc:.4f}")

    os.makedirs(OUT_DIR, exist_ok=True)
    save_file(state, os.path.join(OUT_DIR, "model.safetensors"), metadata={"mode": "LSTM"})
    # The input file holds only `input`, so `recur run` reads it as it is; the labels go beside it.
    save_file({"input": demo_x.contiguous()}, os.path.join(OUT_DIR, "input.safetensors"))
    save_file({"labels": demo_y.contiguous()}, os.path.join(OUT_DIR, "labels.safetensors"))
    save_file(
        {
            "output": out.float().contiguous(),
            "h_n": h_n.contiguous(),
            "c_n": c_n.contiguous(),
            "logits": logits.contiguous(),
        },
        os.path.join(OUT_DIR, "expected.safetensors"),
    )
    demo = {
        "task": (
            "Classify a noisy 1-D waveform of 100 samples as sine, square, triangle or sawtooth "
            "(random frequency 1.5-6 cycles, phase, amplitude 0.5-1.5, Gaussian noise 0-0.25)."
        ),
        "classes": CLASSES,
        "prefix": "lstm.",
        "head": "head.",
        "head_input": "h_n_last_layer",
        "input_layout": "(L, N, 1) sequence-major",
        "expected_dtypes": {"output": "F32", "h_n": "F64", "c_n": "F64", "logits": "F64"},
        "pytorch_accuracy": demo_acc,
        "pytorch_heldout_accuracy": heldout_acc,
        "heldout_examples": HELDOUT,
        "train_steps": steps,
        "train_batch": batch,
        "train_seconds": round(train_seconds, 1),
        "torch_version": torch.__version__,
    }
    with open(os.path.join(OUT_DIR, "demo.json"), "w") as f:
        json.dump(demo, f, indent=2)
        f.write("\n")
    print(f"wrote {OUT_DIR} (trained in {train_seconds:.1f} s)")


if __name__ == "__main__":
    main()
