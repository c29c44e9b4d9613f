#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/ (standard library only).

    python3 fuzz/make_seeds.py

load_model: small models from tests/fixtures (one per mode and dtype, a prefixed one, metadata),
each behind the option byte the target reads first (see fuzz/src/lib.rs, split_options), and
hand-made hostile files (truncated, garbage, lying headers, offsets past the end, huge shapes).
load_input: inputs that fit the target's fixed models (input_size 3) in every layout and dtype,
with h0/c0/lengths, and a few hostile ones. differential, session: bytes from a fixed generator
(the targets read any bytes as a case). Deterministic: rerunning rewrites the same files.
"""
import json
import os
import random
import shutil
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(ROOT, "..", "tests", "fixtures")
CORPUS = os.path.join(ROOT, "corpus")


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + data


def raw(header_text, data=b""):
    return struct.pack("<Q", len(header_text)) + header_text.encode() + data


def floats(values, dtype="F32"):
    if dtype == "F32":
        return struct.pack(f"<{len(values)}f", *values)
    if dtype == "F64":
        return struct.pack(f"<{len(values)}d", *values)
    if dtype == "F16":
        return struct.pack(f"<{len(values)}e", *values)
    if dtype == "BF16":
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    raise ValueError(dtype)


def ints(values, dtype="I64"):
    return struct.pack(f"<{len(values)}{'q' if dtype == 'I64' else 'i'}", *values)


def prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def load_model_seeds():
    # Option byte: bits 0-2 mode (0 none), bit 3 batch_first, bits 4-5 prefix (2 = encoder.rnn).
    fixtures = {
        "gru_l1_uni": 0x00,
        "lstm_proj_l1_uni": 0x00,
        "rnn_tanh_l1_uni": 0x08,
        "hidden1_lstm": 0x01,
        "meta_and_cli_mode_gru": 0x02,
        "weights_f16_gru_l2": 0x00,
        "weights_bf16_lstm_proj": 0x00,
        "nobias_lstm_proj_bi": 0x00,
        "prefix_encoder_lstm": 0x20,
        "prefix_layers_1_rnn_relu": 0x00,  # no prefix: the loader must say which to choose
    }
    for case, option in fixtures.items():
        with open(os.path.join(FIXTURES, case, "model.safetensors"), "rb") as f:
            write("load_model", f"fixture_{case}", bytes([option]) + f.read())
    # A custom prefix: option bits 4-5 = 3, then its length and bytes.
    with open(os.path.join(FIXTURES, "prefix_layers_1_rnn_relu", "model.safetensors"), "rb") as f:
        write("load_model", "fixture_custom_prefix", bytes([0x34, 13]) + b"layers.1.rnn." + f.read())

    # A small valid RNN to mutate, and hostile variants of it.
    w = lambda n: floats([0.1 * ((i % 7) - 3) for i in range(n)])
    rnn = [
        ("weight_ih_l0", "F32", [2, 3], w(6)),
        ("weight_hh_l0", "F32", [2, 2], w(4)),
        ("bias_ih_l0", "F32", [2], w(2)),
        ("bias_hh_l0", "F32", [2], w(2)),
    ]
    good = safetensors(rnn, {"mode": "RNN_TANH", "batch_first": "false"})
    hostile = {
        "small_rnn": good,
        "truncated_data": good[:-5],
        "truncated_header": good[:30],
        "only_length": good[:8],
        "empty": b"",
        "garbage": bytes(random.Random(1).randrange(256) for _ in range(300)),
        "not_json": raw("this is not json"),
        "json_array": raw("[1,2,3]"),
        "header_claims_too_much": struct.pack("<Q", 2**63) + b"{}",
        "offsets_past_end": raw('{"weight_ih_l0":{"dtype":"F32","shape":[4],"data_offsets":[0,1000]}}', bytes(16)),
        "huge_shape": raw('{"weight_ih_l0":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}', bytes(16)),
        "zero_dim_huge": raw('{"weight_hh_l0":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}}'),
        "overlap": raw('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', bytes(16)),
        "many_dims": raw('{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}', bytes(1)),
        "f4_odd_bits": raw('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', bytes(2)),
        "bad_metadata": raw('{"__metadata__":{"mode":7},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
        "meta_mode_lies": safetensors(rnn, {"mode": "LSTM"}),
        "meta_sizes_lie": safetensors(rnn, {"hidden_size": "3", "num_layers": "2", "bidirectional": "true"}),
        "int_weights": safetensors([(n, "I32", s, b) for n, _, s, b in rnn]),
        "layer_gap": safetensors(rnn + [("weight_ih_l2", "F32", [2, 2], w(4)), ("weight_hh_l2", "F32", [2, 2], w(4))]),
        "huge_layer_index": safetensors(rnn + [("weight_ih_l99999999", "F32", [2, 2], w(4))]),
        "proj_on_rnn": safetensors(rnn + [("weight_hr_l0", "F32", [1, 2], w(2))]),
        "reverse_only_half": safetensors(rnn + [("weight_ih_l0_reverse", "F32", [2, 3], w(6))]),
    }
    for name, data in hostile.items():
        write("load_model", name, b"\x00" + data)


def load_input_seeds():
    rng = random.Random(5)
    vals = lambda n: [round(rng.uniform(-1, 1), 3) for _ in range(n)]
    L, N, I = 4, 2, 3
    x = ("input", "F32", [L, N, I], floats(vals(L * N * I)))
    seeds = {
        "seq_major": [x],
        "unbatched": [("input", "F32", [L, I], floats(vals(L * I)))],
        "batch_first": [("input", "F32", [N, L, I], floats(vals(L * N * I)))],
        "lengths_i64": [x, ("lengths", "I64", [N], ints([4, 2]))],
        "lengths_i32": [x, ("lengths", "I32", [N], ints([1, 3], "I32"))],
        "h0_rnn_tanh": [x, ("h0", "F32", [1, N, 4], floats(vals(N * 4)))],
        "h0_c0_lstm": [x, ("h0", "F32", [4, N, 2], floats(vals(4 * N * 2))),
                       ("c0", "F32", [4, N, 5], floats(vals(4 * N * 5)))],
        "h0_rnn_relu_bi": [x, ("h0", "F32", [4, N, 5], floats(vals(4 * N * 5))),
                           ("lengths", "I64", [N], ints([3, 4]))],
        "input_f64": [("input", "F64", [L, N, I], floats(vals(L * N * I), "F64"))],
        "input_f16": [("input", "F16", [L, N, I], floats(vals(L * N * I), "F16"))],
        "input_bf16": [("input", "BF16", [L, N, I], floats(vals(L * N * I), "BF16"))],
        "lengths_negative": [x, ("lengths", "I64", [N], ints([-1, 2]))],
        "lengths_2d": [x, ("lengths", "I64", [1, N], ints([4, 2]))],
        "nan_input": [("input", "F32", [L, N, I], floats([float("nan")] + vals(L * N * I - 1)))],
        "unknown_name": [x, ("hidden", "F32", [1], floats([0.0]))],
        "no_input": [("h0", "F32", [1, N, 4], floats(vals(N * 4)))],
        "int_input": [("input", "I64", [L, N, I], ints(list(range(L * N * I))))],
        "empty_input": [("input", "F32", [0, N, I], b"")],
    }
    for name, tensors in seeds.items():
        write("load_input", name, safetensors(tensors))
    for case in ["lengths_lstm_uni", "unbatched_gru_l2", "input_f16_gru", "lengths_rnn_relu_i32"]:
        with open(os.path.join(FIXTURES, case, "input.safetensors"), "rb") as f:
            write("load_input", f"fixture_{case}", f.read())
    write("load_input", "truncated", safetensors(seeds["seq_major"])[:-7])
    write("load_input", "garbage", bytes(rng.randrange(256) for _ in range(200)))


def random_seeds(target, sizes, seed):
    rng = random.Random(seed)
    for k, size in enumerate(sizes):
        write(target, f"random_{k:02}_{size}", bytes(rng.randrange(256) for _ in range(size)))


def main():
    for target in ["load_model", "load_input", "differential", "session"]:
        shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)
    load_model_seeds()
    load_input_seeds()
    random_seeds("differential", [16, 48, 128, 400, 1200, 3000], 11)
    random_seeds("session", [16, 48, 128, 400, 1200, 3000], 12)


if __name__ == "__main__":
    main()
