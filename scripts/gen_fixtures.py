#!/usr/bin/env python3
"""Builds the PyTorch parity fixtures in tests/fixtures/ (see tests/fixtures/README.md).

Each case is one directory:

    model.safetensors     the module's state_dict, as `safetensors.torch.save_file(module.state_dict(),
                          path, metadata=...)` writes it (f32 unless the case tests another dtype)
    input.safetensors     `input` (f32 unless the case tests another dtype), optional `h0`, `c0` (f32),
                          optional `lengths` (I64; I32 in one case)
    expected.safetensors  PyTorch's truth as F64: `output`, `h_n`, and `c_n` for LSTM, computed by the
                          module in float64 on exactly the stored weights and inputs, widened
    case.json             {"prefix", "mode", "batch_first", "description"}: the load options to use
                          (`mode` and `batch_first` as the CLI's --mode / --batch-first)

Every case is also run in float32 PyTorch: the fixture is rejected unless float32 PyTorch agrees
with the float64 truth to 2e-5 (4x under the 1e-4 contract), so a correct f32 engine can meet it.

Usage (from the repository root):

    /work/peers-venv/bin/python scripts/gen_fixtures.py            # regenerate everything
    /work/peers-venv/bin/python scripts/gen_fixtures.py --verify   # re-check the committed files
                                                                   # against an independent numpy
                                                                   # float64 implementation
    ... --only NAME [NAME ...]                                     # a subset (for debugging)
    ... --random 300 --seed 5 --out /tmp/heldout                   # random cases of the same
                                                                   # kinds, not committed; run the
                                                                   # parity test on them with
                                                                   # RECUR_FIXTURES=/tmp/heldout

Deterministic: each case seeds torch from a hash of its name, one thread.
"""

import argparse
import dataclasses
import itertools
import json
import math
import os
import shutil
import sys
import warnings
import zlib
from typing import Optional

import numpy as np
import torch
from safetensors.numpy import load_file as np_load_file
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

DTYPES = {
    "F32": torch.float32,
    "F64": torch.float64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}

# A fixture is kept only if float32 PyTorch meets the float64 truth this closely.
F32_CONDITIONING = 2e-5


@dataclasses.dataclass
class Case:
    name: str
    mode: str  # RNN_TANH, RNN_RELU, LSTM, GRU
    input_size: int
    hidden: int
    layers: int = 1
    bidir: bool = False
    proj: int = 0
    bias: bool = True
    batch: Optional[int] = 3  # None: unbatched 2-D input
    seq: int = 7
    batch_first: bool = False
    # "meta": batch_first written into the file's metadata; "override": only in case.json.
    batch_first_via: str = "meta"
    metadata: bool = True  # write {"mode", "batch_first"} metadata
    case_mode: bool = False  # also pass the mode in case.json (required for RNN_RELU w/o metadata)
    h0: bool = False
    lengths: Optional[list] = None
    lengths_dtype: str = "I64"
    weight_scale: float = 1.0  # multiplies PyTorch's default init
    weight_dtype: str = "F32"
    input_dtype: str = "F32"
    input_scale: float = 1.0
    nonfinite: tuple = ()  # ((t, b, i, value), ...); b is ignored when unbatched
    prefix: str = ""  # non-empty: the module sits inside a larger state_dict
    description: str = ""


CASES = []


def case(name, mode, input_size, hidden, description, **kw):
    CASES.append(Case(name, mode, input_size, hidden, description=description, **kw))


MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "LSTM_PROJ", "GRU"]


def mode_of(m):
    return "LSTM" if m == "LSTM_PROJ" else m


# --- every mode x {1, 2, 3 layers} x {uni, bidirectional} -------------------------------------
# Shapes vary per structure; metadata is written for some and left out for others.
STRUCTURES = [
    # tag, layers, bidir, I, H, P, L, N, metadata
    ("l1_uni", 1, False, 5, 17, 5, 7, 3, True),
    ("l1_bi", 1, True, 3, 8, 3, 6, 1, False),
    ("l2_uni", 2, False, 7, 12, 4, 5, 9, False),
    ("l2_bi", 2, True, 4, 16, 7, 5, 20, True),
    ("l3_uni", 3, False, 6, 9, 2, 9, 3, True),
    ("l3_bi", 3, True, 2, 5, 3, 4, 17, False),
]
for m in MODES:
    for tag, layers, bidir, i, h, p, seq, n, meta in STRUCTURES:
        case(
            f"{m.lower()}_{tag}",
            mode_of(m),
            i,
            h,
            f"{m}, {layers} layer(s), {'bidirectional' if bidir else 'unidirectional'}, "
            f"I={i} H={h}{f' P={p}' if m == 'LSTM_PROJ' else ''} L={seq} N={n}, "
            f"{'with' if meta else 'without'} metadata",
            layers=layers,
            bidir=bidir,
            proj=p if m == "LSTM_PROJ" else 0,
            seq=seq,
            batch=n,
            metadata=meta,
            case_mode=(m == "RNN_RELU" and not meta),
        )

# --- batch_first ------------------------------------------------------------------------------
case("batch_first_meta_lstm_l2_bi", "LSTM", 4, 10, "LSTM batch_first from metadata, 2 layers bi",
     layers=2, bidir=True, batch_first=True, seq=6, batch=3)
case("batch_first_meta_gru_lengths_h0", "GRU", 3, 7,
     "GRU batch_first from metadata, 2 layers bi, variable lengths and h0",
     layers=2, bidir=True, batch_first=True, seq=6, batch=4, lengths=[6, 2, 5, 1], h0=True)
case("batch_first_override_rnn_tanh_bi", "RNN_TANH", 5, 6,
     "RNN_TANH without metadata, batch_first given only as the CLI override (case.json)",
     bidir=True, batch_first=True, batch_first_via="override", metadata=False, seq=5, batch=3)
case("batch_first_override_lstm_proj_l2", "LSTM", 3, 9,
     "LSTM proj_size=4 without metadata, batch_first as the CLI override, N=20",
     layers=2, proj=4, batch_first=True, batch_first_via="override", metadata=False, seq=4,
     batch=20)
case("batch_first_meta_unbatched_lstm", "LSTM", 3, 6,
     "LSTM with batch_first metadata given unbatched (L, I) input: batch_first does not apply",
     layers=2, batch_first=True, batch=None, seq=5)

# --- unbatched 2-D input ----------------------------------------------------------------------
case("unbatched_gru_l2", "GRU", 4, 7, "GRU unbatched (L, I) input, no h0", layers=2, batch=None)
case("unbatched_lstm_bi_h0", "LSTM", 3, 5, "LSTM bi 2 layers, unbatched input with unbatched h0/c0",
     layers=2, bidir=True, batch=None, h0=True)
case("unbatched_lstm_proj_h0", "LSTM", 4, 8, "LSTM proj_size=3, unbatched input with h0/c0",
     proj=3, batch=None, h0=True, seq=6)
case("unbatched_rnn_relu_h0", "RNN_RELU", 5, 6, "RNN_RELU bi, unbatched input with h0",
     bidir=True, batch=None, h0=True, seq=4)
case("unbatched_rnn_tanh", "RNN_TANH", 2, 3, "RNN_TANH unbatched, no metadata", batch=None,
     metadata=False, seq=8)

# --- bias=False -------------------------------------------------------------------------------
case("nobias_lstm_l2_bi", "LSTM", 4, 6, "LSTM bias=False, 2 layers bi", bias=False, layers=2,
     bidir=True)
case("nobias_gru", "GRU", 5, 9, "GRU bias=False", bias=False, batch=9, metadata=False)
case("nobias_rnn_relu_l2", "RNN_RELU", 3, 8, "RNN_RELU bias=False, 2 layers", bias=False, layers=2)
case("nobias_lstm_proj_bi", "LSTM", 3, 7, "LSTM proj_size=2 bias=False bi", bias=False, proj=2,
     bidir=True, metadata=False)

# --- h0 / c0 ----------------------------------------------------------------------------------
case("h0_lstm_l2_bi", "LSTM", 4, 8, "LSTM 2 layers bi with h0 and c0", layers=2, bidir=True,
     h0=True)
case("h0_gru_l3_bi", "GRU", 3, 6, "GRU 3 layers bi with h0", layers=3, bidir=True, h0=True,
     batch=20)
case("h0_rnn_tanh_l2", "RNN_TANH", 5, 10, "RNN_TANH 2 layers with h0", layers=2, h0=True,
     metadata=False)
case("h0_rnn_relu", "RNN_RELU", 4, 5, "RNN_RELU with h0", h0=True, batch=1)
case("h0_lstm_proj_bi", "LSTM", 5, 11, "LSTM proj_size=6 bi with h0 (N,6) and c0 (N,11)",
     proj=6, bidir=True, h0=True)

# --- variable lengths -------------------------------------------------------------------------
case("lengths_lstm_uni", "LSTM", 3, 6, "LSTM, variable lengths", seq=7, batch=5,
     lengths=[3, 7, 1, 5, 7])
case("lengths_lstm_l2_bi_h0", "LSTM", 4, 9, "LSTM 2 layers bi, variable lengths, with h0/c0",
     layers=2, bidir=True, seq=8, batch=4, lengths=[8, 3, 5, 1], h0=True)
case("lengths_gru_l3_bi_n20", "GRU", 3, 7, "GRU 3 layers bi, variable lengths, N=20",
     layers=3, bidir=True, seq=9, batch=20, lengths="random")
case("lengths_rnn_relu_i32", "RNN_RELU", 4, 6, "RNN_RELU bi, variable lengths stored as I32",
     bidir=True, seq=6, batch=3, lengths=[2, 6, 4], lengths_dtype="I32")
case("lengths_rnn_tanh_l2_bi", "RNN_TANH", 2, 5, "RNN_TANH 2 layers bi, variable lengths",
     layers=2, bidir=True, seq=5, batch=6, lengths=[5, 5, 1, 2, 3, 4], metadata=False)
case("lengths_lstm_proj_bi_h0", "LSTM", 3, 8, "LSTM proj_size=3 bi, variable lengths, h0/c0",
     proj=3, bidir=True, seq=6, batch=3, lengths=[4, 6, 2], h0=True)
case("lengths_all_full_gru_bi", "GRU", 3, 4, "GRU bi, lengths given but all equal to L",
     bidir=True, seq=5, batch=3, lengths=[5, 5, 5])
case("lengths_n1_lstm_bi", "LSTM", 2, 5, "LSTM bi, batch 1 with a length shorter than L",
     bidir=True, seq=6, batch=1, lengths=[4])
case("lengths_batch_first_lstm_l2", "LSTM", 3, 6,
     "LSTM 2 layers batch_first (metadata), variable lengths",
     layers=2, batch_first=True, seq=5, batch=3, lengths=[2, 5, 3])

# --- odd sizes ----------------------------------------------------------------------------------
case("hidden1_lstm", "LSTM", 3, 1, "LSTM hidden_size 1", batch=3)
case("hidden1_gru_l2_bi", "GRU", 2, 1, "GRU hidden_size 1, 2 layers bi", layers=2, bidir=True)
case("hidden1_rnn_tanh_input1", "RNN_TANH", 1, 1, "RNN_TANH hidden 1, input 1", batch=9)
case("lstm_proj1", "LSTM", 4, 5, "LSTM proj_size 1, 2 layers bi", proj=1, layers=2, bidir=True)
case("input1_lstm_l2", "LSTM", 1, 17, "LSTM input_size 1, hidden 17, 2 layers", layers=2)
case("hidden33_gru_b33", "GRU", 13, 33, "GRU hidden 33, N=33", batch=33, seq=4)
case("hidden1000_rnn_tanh_bf16", "RNN_TANH", 3, 1000,
     "RNN_TANH hidden 1000, weights stored as BF16 (the truth uses those rounded weights)",
     weight_dtype="BF16", seq=4, batch=2)
case("hidden1000_lstm_proj8", "LSTM", 3, 1000, "LSTM hidden 1000 with proj_size 8, bi",
     proj=8, bidir=True, seq=4, batch=3)
case("seq1_lstm_l2_bi", "LSTM", 3, 4, "LSTM 2 layers bi, a single time step", layers=2,
     bidir=True, seq=1)

# --- long sequences ---------------------------------------------------------------------------
case("seq1000_lstm_bi", "LSTM", 3, 8, "LSTM bi, 1000 steps", bidir=True, seq=1000, batch=2)
case("seq1000_gru_l2", "GRU", 2, 6, "GRU 2 layers, 1000 steps", layers=2, seq=1000, batch=3)
case("seq1000_rnn_tanh_lengths", "RNN_TANH", 2, 5, "RNN_TANH bi, 1000 steps, variable lengths",
     bidir=True, seq=1000, batch=3, lengths=[1000, 517, 3])

# --- saturation and larger weights --------------------------------------------------------------
case("saturate_lstm_l2_bi", "LSTM", 4, 8, "LSTM 2 layers bi, inputs x100 (gates saturate)",
     layers=2, bidir=True, input_scale=100.0, seq=8, batch=9)
case("saturate_gru", "GRU", 3, 7, "GRU, inputs x100", input_scale=100.0, seq=8)
case("saturate_rnn_tanh_bi", "RNN_TANH", 5, 6, "RNN_TANH bi, inputs x100", bidir=True,
     input_scale=100.0)
case("saturate_lstm_proj", "LSTM", 3, 9, "LSTM proj_size=4, inputs x100", proj=4,
     input_scale=100.0)
case("scale3_lstm_l2", "LSTM", 4, 12, "LSTM 2 layers, weights 3x PyTorch's default init",
     layers=2, weight_scale=3.0, seq=10, batch=9)
case("scale3_gru_bi", "GRU", 5, 10, "GRU bi, weights 3x default", bidir=True, weight_scale=3.0,
     seq=10)
case("scale2_rnn_tanh_l2", "RNN_TANH", 3, 16, "RNN_TANH 2 layers, weights 2x default", layers=2,
     weight_scale=2.0, seq=10)
case("scale2_rnn_relu", "RNN_RELU", 3, 8, "RNN_RELU, weights 2x default", weight_scale=2.0)
case("scale4_lstm_proj_bi", "LSTM", 3, 10, "LSTM proj_size=5 bi, weights 4x default", proj=5,
     bidir=True, weight_scale=4.0, seq=8)

# --- NaN / inf in one batch element -------------------------------------------------------------
NAN = float("nan")
INF = float("inf")
case("nan_lstm_l2_bi", "LSTM", 4, 6,
     "LSTM 2 layers bi, a NaN in batch element 1 at t=2: the other elements stay exact",
     layers=2, bidir=True, batch=3, seq=6, nonfinite=((2, 1, 0, NAN),))
case("nan_gru_n20", "GRU", 3, 5, "GRU, a NaN in batch element 13 of 20", batch=20, seq=5,
     nonfinite=((3, 13, 2, NAN),))
case("nan_rnn_relu_bi", "RNN_RELU", 3, 4, "RNN_RELU bi, a NaN in batch element 0", bidir=True,
     batch=3, seq=5, nonfinite=((4, 0, 1, NAN),))
case("nan_lstm_proj", "LSTM", 3, 6, "LSTM proj_size=2, a NaN in batch element 2", proj=2,
     batch=3, seq=5, nonfinite=((0, 2, 0, NAN),))
case("nan_in_padding_gru_bi", "GRU", 3, 5,
     "GRU bi with lengths: NaN past element 0's length (ignored) and inside element 2's",
     bidir=True, batch=3, seq=6, lengths=[3, 6, 4],
     nonfinite=((4, 0, 0, NAN), (5, 0, 2, NAN), (1, 2, 1, NAN)))
case("inf_lstm", "LSTM", 3, 5, "LSTM, +inf and -inf in batch element 1 (gates saturate exactly)",
     batch=3, seq=5, nonfinite=((1, 1, 0, INF), (3, 1, 2, -INF)))
case("inf_gru_bi", "GRU", 3, 5, "GRU bi, +inf in batch element 0", bidir=True, batch=3, seq=5,
     nonfinite=((2, 0, 1, INF),))

# --- prefix: a recurrent module inside a larger state_dict ---------------------------------------
case("prefix_encoder_lstm", "LSTM", 5, 8,
     "prefix encoder.rnn.: an LSTM (2 layers bi) inside a model that also holds a Linear and a "
     "decoder GRU", layers=2, bidir=True, metadata=False, prefix="encoder.rnn.")
case("prefix_decoder_gru", "GRU", 16, 6,
     "prefix decoder.rnn.: the GRU of the same kind of model (its input is the encoder's output)",
     metadata=False, prefix="decoder.rnn.")
case("prefix_layers_1_rnn_relu", "RNN_RELU", 4, 4,
     "prefix layers.1.rnn.: one of several sibling RNNs (layers.0, layers.1, layers.10)",
     metadata=False, case_mode=True, prefix="layers.1.rnn.")

# --- dtypes -------------------------------------------------------------------------------------
case("weights_f64_lstm_bi", "LSTM", 4, 7, "LSTM bi, weights stored as F64 (not f32-representable)",
     bidir=True, weight_dtype="F64")
case("weights_f16_gru_l2", "GRU", 3, 9, "GRU 2 layers, weights stored as F16", layers=2,
     weight_dtype="F16")
case("weights_bf16_lstm_proj", "LSTM", 4, 10, "LSTM proj_size=3, weights stored as BF16", proj=3,
     weight_dtype="BF16")
case("weights_f16_rnn_relu_bi", "RNN_RELU", 3, 6, "RNN_RELU bi, weights as F16", bidir=True,
     weight_dtype="F16")
case("input_f64_lstm_l2", "LSTM", 3, 6, "LSTM 2 layers, input stored as F64", layers=2,
     input_dtype="F64")
case("input_f64_gru_lengths", "GRU", 3, 5, "GRU bi, F64 input with variable lengths", bidir=True,
     input_dtype="F64", batch=3, seq=5, lengths=[5, 2, 4])
case("input_f16_gru", "GRU", 4, 6, "GRU, input stored as F16", input_dtype="F16")
case("input_bf16_rnn_tanh", "RNN_TANH", 4, 6, "RNN_TANH, input stored as BF16",
     input_dtype="BF16")

# --- metadata variants --------------------------------------------------------------------------
case("meta_and_cli_mode_gru", "GRU", 3, 4, "GRU with mode in metadata and the same --mode given",
     case_mode=True)
case("nometa_lstm_l3_bi_n1", "LSTM", 2, 3, "LSTM 3 layers bi without metadata, batch 1",
     layers=3, bidir=True, metadata=False, batch=1)


# --------------------------------------------------------------------------------------------------


def save_model(state: dict, path: str, metadata: Optional[dict]):
    """`safetensors.torch.save_file`, then the metadata object's keys put in sorted order.

    save_file writes the metadata keys in a random (hash map) order; sorting them in place (same
    bytes, same length) makes regenerated files byte-identical.
    """
    save_file(state, path, metadata=metadata)
    if not metadata:
        return
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = f.read(n)
        meta = json.loads(header)["__metadata__"]
        canonical = json.dumps(dict(sorted(meta.items())), separators=(",", ":")).encode()
        for perm in itertools.permutations(meta.items()):  # find the order save_file used
            written = json.dumps(dict(perm), separators=(",", ":")).encode()
            if written in header:
                break
        else:
            raise RuntimeError(f"{path}: cannot find the metadata in the header")
        assert len(written) == len(canonical)
        f.seek(8)
        f.write(header.replace(written, canonical, 1))


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def make_rnn(c: Case, dtype=torch.float32) -> nn.Module:
    kw = dict(
        input_size=c.input_size,
        hidden_size=c.hidden,
        num_layers=c.layers,
        bias=c.bias,
        batch_first=c.batch_first,
        bidirectional=c.bidir,
        dtype=dtype,
    )
    if c.mode == "LSTM":
        return nn.LSTM(proj_size=c.proj, **kw)
    if c.mode == "GRU":
        return nn.GRU(**kw)
    return nn.RNN(nonlinearity="tanh" if c.mode == "RNN_TANH" else "relu", **kw)


class EncoderDecoder(nn.Module):
    """A larger model: `encoder.rnn` LSTM, `encoder.proj` Linear, `decoder.rnn` GRU, `decoder.out`."""

    def __init__(self, encoder_rnn, decoder_rnn):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.rnn = encoder_rnn
        self.encoder.proj = nn.Linear(2 * 8, 16)
        self.decoder = nn.Module()
        self.decoder.rnn = decoder_rnn
        self.decoder.out = nn.Linear(6, 3)


def build_module(c: Case):
    """Returns (state_dict to save, the recurrent module the truth is computed with)."""
    torch.manual_seed(seed_of(c.name))
    wdtype = torch.float64 if c.weight_dtype == "F64" else torch.float32
    rnn = make_rnn(c, wdtype)
    if c.weight_scale != 1.0:
        with torch.no_grad():
            for p in rnn.parameters():
                p.mul_(c.weight_scale)
    if not c.prefix:
        state = rnn.state_dict()
    elif c.prefix in ("encoder.rnn.", "decoder.rnn."):
        enc_case = dataclasses.replace(c, mode="LSTM", input_size=5, hidden=8, layers=2, bidir=True)
        dec_case = dataclasses.replace(c, mode="GRU", input_size=16, hidden=6, layers=1,
                                       bidir=False)
        if c.prefix == "encoder.rnn.":
            enc, dec = rnn, make_rnn(dec_case)
        else:
            enc, dec = make_rnn(enc_case), rnn
        state = EncoderDecoder(enc, dec).state_dict()
    elif c.prefix == "layers.1.rnn.":
        outer = nn.Module()
        blocks = {}
        for k in (0, 1, 10):
            blocks[str(k)] = nn.Module()
            blocks[str(k)].rnn = rnn if k == 1 else make_rnn(dataclasses.replace(c, hidden=4 + k % 3))
        outer.layers = nn.ModuleDict(blocks)
        state = outer.state_dict()
    else:
        raise ValueError(c.prefix)
    state = {k: v.detach().to(DTYPES[c.weight_dtype]).contiguous() for k, v in state.items()}
    # The truth's module holds exactly the stored values, widened to f64.
    truth = make_rnn(c, torch.float64)
    own = {k[len(c.prefix):]: v for k, v in state.items() if k.startswith(c.prefix)}
    truth.load_state_dict({k: v.double() for k, v in own.items()})
    return state, truth


def build_inputs(c: Case):
    """Returns the tensors to store: `input` (stored dtype), optional h0/c0 (f32), lengths."""
    g = torch.Generator().manual_seed(seed_of(c.name) + 1)
    xdtype = torch.float64 if c.input_dtype == "F64" else torch.float32
    if c.batch is None:
        shape = (c.seq, c.input_size)
    elif c.batch_first:
        shape = (c.batch, c.seq, c.input_size)
    else:
        shape = (c.seq, c.batch, c.input_size)
    x = torch.randn(shape, generator=g, dtype=xdtype) * c.input_scale
    for t, b, i, v in c.nonfinite:
        if c.batch is None:
            x[t, i] = v
        elif c.batch_first:
            x[b, t, i] = v
        else:
            x[t, b, i] = v
    tensors = {"input": x.to(DTYPES[c.input_dtype]).contiguous()}
    d = 2 if c.bidir else 1
    h_out = c.proj if c.proj else c.hidden
    if c.h0:
        lead = (d * c.layers,) if c.batch is None else (d * c.layers, c.batch)
        tensors["h0"] = (torch.randn(lead + (h_out,), generator=g) * 0.5).contiguous()
        if c.mode == "LSTM":
            tensors["c0"] = (torch.randn(lead + (c.hidden,), generator=g) * 0.5).contiguous()
    if c.lengths is not None:
        if c.lengths == "random":
            lengths = torch.randint(1, c.seq + 1, (c.batch,), generator=g)
            lengths[0] = c.seq
            lengths[1] = 1
        else:
            lengths = torch.tensor(c.lengths)
        assert len(lengths) == c.batch and int(lengths.min()) >= 1 and int(lengths.max()) <= c.seq
        tensors["lengths"] = lengths.to(torch.int32 if c.lengths_dtype == "I32" else torch.int64)
    return tensors


def run_torch(rnn: nn.Module, c: Case, tensors: dict, dtype):
    """PyTorch's forward in `dtype`; returns {"output", "h_n"[, "c_n"]}."""
    x = tensors["input"].to(dtype)
    hx = None
    if "h0" in tensors:
        h0 = tensors["h0"].to(dtype)
        hx = (h0, tensors["c0"].to(dtype)) if c.mode == "LSTM" else h0
    with torch.no_grad():
        if "lengths" in tensors:
            lengths = tensors["lengths"].to(torch.int64)
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=c.batch_first, enforce_sorted=False
            )
            out, state = rnn(packed, hx)
            out, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=c.batch_first, total_length=c.seq
            )
        else:
            out, state = rnn(x, hx)
    result = {"output": out}
    if c.mode == "LSTM":
        result["h_n"], result["c_n"] = state
    else:
        result["h_n"] = state
    return {k: v.contiguous() for k, v in result.items()}


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.equal(torch.isnan(a), torch.isnan(b)):
        return math.inf
    finite = ~torch.isnan(b)
    if not torch.equal(a[finite].isinf(), b[finite].isinf()):
        return math.inf
    both = finite & ~b.isinf()
    return (a[both] - b[both]).abs().max().item() if both.any() else 0.0


class IllConditioned(Exception):
    pass


def generate(c: Case, out_dir: str = FIXTURES):
    state, truth_rnn = build_module(c)
    tensors = build_inputs(c)
    expected = {k: v.double() for k, v in run_torch(truth_rnn.eval(), c, tensors, torch.float64).items()}

    # Conditioning: float32 PyTorch on the same (f32-rounded) values must meet the truth closely.
    rnn32 = make_rnn(c, torch.float32)
    rnn32.load_state_dict({k: v.float() for k, v in truth_rnn.state_dict().items()})
    got32 = run_torch(rnn32.eval(), c, tensors, torch.float32)
    f32_err = max(max_abs_diff(got32[k], expected[k]) for k in expected)
    if not f32_err <= F32_CONDITIONING:
        raise IllConditioned(f"{c.name}: float32 PyTorch differs from the float64 truth by {f32_err:.3g}"
                         f" (> {F32_CONDITIONING})")
    max_mag = max(
        (v[~torch.isnan(v) & ~v.isinf()].abs().max().item() if v.numel() else 0.0)
        for v in expected.values()
    )

    # Sanity of the semantics we rely on: zeros past each length, NaN confined to its element.
    if "lengths" in tensors and c.batch is not None:
        out = expected["output"] if not c.batch_first else expected["output"].transpose(0, 1)
        for b, n in enumerate(tensors["lengths"].tolist()):
            assert torch.all(out[n:, b] == 0), c.name
    if c.nonfinite and c.batch is not None:
        bad = {b for _, b, _, _ in c.nonfinite}
        for k, v in expected.items():
            bdim = 0 if (k == "output" and c.batch_first) else 1
            for b in range(c.batch):
                if b not in bad:
                    assert not torch.isnan(v.select(bdim, b)).any(), (c.name, k, b)

    d = os.path.join(out_dir, c.name)
    os.makedirs(d, exist_ok=True)
    metadata = None
    if c.metadata:
        metadata = {"mode": c.mode}
        if c.batch_first_via == "meta":
            metadata["batch_first"] = "true" if c.batch_first else "false"
    save_model(state, os.path.join(d, "model.safetensors"), metadata)
    save_file(tensors, os.path.join(d, "input.safetensors"))
    save_file(expected, os.path.join(d, "expected.safetensors"))
    spec = {
        "prefix": c.prefix,
        "mode": c.mode if c.case_mode else None,
        "batch_first": c.batch_first and c.batch_first_via == "override",
        "description": c.description,
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))
    print(f"{c.name:36s} f32-vs-f64 {f32_err:9.2e}  max|out| {max_mag:8.3g}  {size / 1024:7.1f} KiB")


# --- independent check: numpy float64 ---------------------------------------------------------------


def sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def np_cell(mode, relu, w, x, h, c):
    """One step for a batch: x (N, I), h (N, H_out), c (N, H) or None. Returns (h', c')."""
    gx = x @ w["weight_ih"].T + w.get("bias_ih", 0.0)
    gh = h @ w["weight_hh"].T + w.get("bias_hh", 0.0)
    if mode == "GRU":
        hs = gh.shape[1] // 3
        r = sigmoid(gx[:, :hs] + gh[:, :hs])
        z = sigmoid(gx[:, hs:2 * hs] + gh[:, hs:2 * hs])
        n = np.tanh(gx[:, 2 * hs:] + r * gh[:, 2 * hs:])
        return (1.0 - z) * n + z * h, None
    if mode == "LSTM":
        s = gx + gh
        hs = s.shape[1] // 4
        i, f = sigmoid(s[:, :hs]), sigmoid(s[:, hs:2 * hs])
        g, o = np.tanh(s[:, 2 * hs:3 * hs]), sigmoid(s[:, 3 * hs:])
        c2 = f * c + i * g
        h2 = o * np.tanh(c2)
        if "weight_hr" in w:
            h2 = h2 @ w["weight_hr"].T
        return h2, c2
    s = gx + gh
    return (np.maximum(s, 0.0) if relu else np.tanh(s)), None


def np_forward(mode, relu, weights, layers, bidir, x, h0, c0, lengths):
    """x (L, N, I) f64; weights[(layer, dir)] = dict. Returns output, h_n, c_n (c_n may be None)."""
    L, N, _ = x.shape
    D = 2 if bidir else 1
    lengths = np.full(N, L) if lengths is None else np.asarray(lengths)
    h_n, c_n = [], []
    inp = x
    for k in range(layers):
        outs = []
        for d in range(D):
            w = weights[(k, d)]
            h = h0[k * D + d].copy()
            c = c0[k * D + d].copy() if c0 is not None else None
            out = np.zeros((L, N, h.shape[1]))
            for b in range(N):
                hb, cb = h[b:b + 1], (c[b:b + 1] if c is not None else None)
                steps = range(lengths[b]) if d == 0 else range(lengths[b] - 1, -1, -1)
                for t in steps:
                    hb, cb = np_cell(mode, relu, w, inp[t, b:b + 1], hb, cb)
                    out[t, b] = hb[0]
                h[b] = hb[0]
                if c is not None:
                    c[b] = cb[0]
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(h_n), (np.stack(c_n) if c0 is not None else None)


def verify(name: str, out_dir: str = FIXTURES) -> float:
    d = os.path.join(out_dir, name)
    with open(os.path.join(d, "case.json")) as f:
        spec = json.load(f)
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k).double().numpy() for k in f.keys()}
    prefix = spec["prefix"]
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in state)
    bidir = any(k.endswith("_reverse") for k in state)
    gates = state["weight_ih_l0"].shape[0] // (state["weight_hr_l0"].shape[1]
                                              if "weight_hr_l0" in state
                                              else state["weight_hh_l0"].shape[1])
    mode = spec["mode"] or meta.get("mode") or {4: "LSTM", 3: "GRU", 1: "RNN_TANH"}[gates]
    relu = mode == "RNN_RELU"
    cell = "LSTM" if mode == "LSTM" else "GRU" if mode == "GRU" else "RNN"
    batch_first = spec["batch_first"] or meta.get("batch_first") == "true"
    weights = {}
    for k in range(layers):
        for dd in range(2 if bidir else 1):
            sfx = f"_l{k}" + ("_reverse" if dd else "")
            weights[(k, dd)] = {
                kind: state[kind + sfx]
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                if kind + sfx in state
            }
    inputs = {}
    with safe_open(os.path.join(d, "input.safetensors"), "pt") as f:
        for k in f.keys():
            inputs[k] = f.get_tensor(k)
    x = inputs["input"].double().numpy()
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = x.transpose(1, 0, 2)
    D = 2 if bidir else 1
    h_out = weights[(0, 0)]["weight_hh"].shape[1]
    hidden = weights[(0, 0)]["weight_hh"].shape[0] // (4 if cell == "LSTM" else 3 if cell == "GRU"
                                                        else 1)
    N = x.shape[1]
    h0 = inputs["h0"].double().numpy() if "h0" in inputs else np.zeros((D * layers, N, h_out))
    c0 = inputs["c0"].double().numpy() if "c0" in inputs else np.zeros((D * layers, N, hidden))
    if unbatched:
        h0 = h0.reshape(D * layers, 1, h_out)
        c0 = c0.reshape(D * layers, 1, hidden)
    lengths = inputs["lengths"].numpy() if "lengths" in inputs else None
    with np.errstate(invalid="ignore", over="ignore"):
        out, h_n, c_n = np_forward(cell, relu, weights, layers, bidir, x, h0,
                                   c0 if cell == "LSTM" else None, lengths)
    if unbatched:
        out, h_n = out[:, 0], h_n[:, 0]
        c_n = c_n[:, 0] if c_n is not None else None
    elif batch_first:
        out = out.transpose(1, 0, 2)
    expected = np_load_file(os.path.join(d, "expected.safetensors"))
    got = {"output": out, "h_n": h_n}
    if cell == "LSTM":
        got["c_n"] = c_n
    assert set(got) == set(expected), (name, set(got), set(expected))
    worst = 0.0
    for k, e in expected.items():
        assert e.dtype == np.float64 and got[k].shape == e.shape, (name, k, got[k].shape, e.shape)
        err = max_abs_diff(torch.from_numpy(got[k]), torch.from_numpy(e))
        worst = max(worst, err)
    return worst


def random_cases(count: int, seed: int):
    """Random configurations of every kind the committed cases cover (for held-out style runs)."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    cases = []
    for k in range(count):
        m = pick(MODES)
        mode = mode_of(m)
        hidden = int(pick([1, 2, 3, 5, 8, 16, 17, 24, 31, 33, 40, 64]))
        batch = None if rng.random() < 0.15 else int(pick([1, 2, 3, 4, 7, 8, 9, 16, 17, 20, 33]))
        seq = int(pick([1, 2, 3, 5, 8, 13, 30, 100]))
        lengths = None
        if batch is not None and rng.random() < 0.35:
            lengths = [int(v) for v in rng.integers(1, seq + 1, size=batch)]
        nonfinite = ()
        if batch is not None and batch > 1 and rng.random() < 0.1:
            nonfinite = ((int(rng.integers(seq)), int(rng.integers(batch)), 0,
                          pick([NAN, INF, -INF])),)
        bf = bool(rng.random() < 0.3)
        meta = bool(rng.random() < 0.5)
        c = Case(
            name=f"random_{seed}_{k:04d}",
            mode=mode,
            input_size=int(pick([1, 2, 3, 4, 7, 13, 20, 32])),
            hidden=hidden,
            layers=int(pick([1, 1, 2, 3])),
            bidir=bool(rng.random() < 0.5),
            proj=int(rng.integers(1, hidden)) if m == "LSTM_PROJ" and hidden > 1 else 0,
            bias=bool(rng.random() < 0.8),
            batch=batch,
            seq=seq,
            batch_first=bf,
            batch_first_via="meta" if meta else "override",
            metadata=meta,
            case_mode=(mode == "RNN_RELU" and not meta) or rng.random() < 0.1,
            h0=bool(rng.random() < 0.3),
            lengths=lengths,
            lengths_dtype=pick(["I64", "I32"]),
            weight_scale=float(pick([1.0, 1.0, 1.0, 2.0, 3.0])),
            weight_dtype=pick(["F32"] * 5 + ["F64", "F16", "BF16"]),
            input_dtype=pick(["F32"] * 5 + ["F64", "F16", "BF16"]),
            input_scale=float(pick([1.0, 1.0, 1.0, 10.0, 100.0])),
            nonfinite=nonfinite,
            description=f"random case {k} (seed {seed}), {m}",
        )
        cases.append(c)
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--verify", action="store_true", help="check the committed fixtures with numpy")
    ap.add_argument("--only", nargs="*", help="case names")
    ap.add_argument("--random", type=int, metavar="N",
                    help="instead of the committed cases, N random ones (into --out)")
    ap.add_argument("--seed", type=int, default=1, help="seed of --random")
    ap.add_argument("--out", default=FIXTURES, help="output directory (default tests/fixtures)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    selected = [c for c in CASES if not args.only or c.name in args.only]
    if args.random:
        selected = random_cases(args.random, args.seed)
    if args.verify:
        worst = 0.0
        for c in selected:
            if not os.path.isdir(os.path.join(args.out, c.name)):
                continue  # a random case skipped as ill-conditioned
            err = verify(c.name, args.out)
            print(f"{c.name:36s} numpy-vs-expected {err:9.2e}")
            if not err <= 1e-9:
                raise SystemExit(f"{c.name}: numpy float64 disagrees with expected by {err}")
            worst = max(worst, err)
        print(f"verified {sum(os.path.isdir(os.path.join(args.out, c.name)) for c in selected)} cases, worst |numpy - expected| = {worst:.3g}")
        return
    if not args.only:
        for entry in os.listdir(args.out) if os.path.isdir(args.out) else []:
            if os.path.isdir(os.path.join(args.out, entry)):
                shutil.rmtree(os.path.join(args.out, entry))
    written = 0
    for c in selected:
        try:
            generate(c, args.out)
            written += 1
        except IllConditioned as e:
            if not args.random:
                raise SystemExit(f"{e}: ill-conditioned case")
            print(f"skipped {e}")
    print(f"wrote {written} cases to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
