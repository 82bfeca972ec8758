"""Multiply-accumulates per window, counted two ways.

From the PyTorch model (``count_torch``): forward hooks on convolutions, linear layers, GRU/LSTM/RNN and
attention (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``), on one window. From an ONNX graph
(``count_onnx``): Conv, ConvTranspose, Gemm, MatMul, GRU, LSTM and RNN nodes after shape inference with a
batch of one. Neither counts normalisation, activations, pooling, element-wise ops or softmax: they are
small beside the products for the models here. The two counts agree exactly for the zoo's cnn1d, gru,
resnet8x4 and transformer (tests/test_deploy.py checks gru and transformer).
"""
from __future__ import annotations

import math
from typing import Any

TORCH_SOURCE = ("counted from the PyTorch model with forward hooks on Conv/Linear/GRU/LSTM/RNN/attention layers "
                "(normalisation, activations and pooling not counted)")
ONNX_SOURCE = ("counted from the ONNX graph: Conv/Gemm/MatMul/GRU/LSTM/RNN nodes after shape inference "
               "(normalisation, activations and pooling not counted)")


def _rnn_macs(kind: str, steps: int, inp: int, hidden: int, layers: int, dirs: int, proj_in: int) -> int:
    gates = {"GRU": 3, "LSTM": 4}.get(kind, 1)
    total = 0
    for layer in range(layers):
        width = inp if layer == 0 else proj_in
        total += dirs * steps * gates * (width * hidden + hidden * hidden)
    return total


def count_torch(model: Any, example: Any) -> dict[str, Any]:
    """MACs of one window (``example`` is a batch of windows; the count is divided by its size)."""
    import torch
    from torch import nn

    from edgedistill.models.modes import evaluating

    macs: dict[str, int] = {}
    handles = []
    covered: set[str] = set()

    def add(name: str, value: float) -> None:
        macs[name] = macs.get(name, 0) + int(value)

    for name, mod in model.named_modules():
        if isinstance(mod, nn.TransformerEncoderLayer):
            covered.update(f"{name}.{sub}" for sub, _ in mod.named_modules() if sub)

    def hook_for(name: str, mod: Any) -> Any:
        def hook(m: Any, args: Any, out: Any) -> None:
            x = args[0] if args else None
            if isinstance(m, nn.TransformerEncoderLayer):
                # Fast path in eval mode bypasses the sublayers' own forward (and their hooks).
                seq, emb = (x.shape[1], x.shape[2]) if m.self_attn.batch_first else (x.shape[0], x.shape[2])
                ff = m.linear1.out_features
                add(name, seq * (4 * emb * emb + 2 * seq * emb + 2 * emb * ff))
            elif isinstance(m, nn.MultiheadAttention):
                q, k = args[0], args[1]
                lq, lk = (q.shape[1], k.shape[1]) if m.batch_first else (q.shape[0], k.shape[0])
                e = m.embed_dim
                add(name, lq * e * e + 2 * lk * e * e + lq * e * e + 2 * lq * lk * e)
            elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                per = (m.out_channels // m.groups) * math.prod(m.kernel_size)
                add(name, x[0].numel() * per)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                per = (m.in_channels // m.groups) * math.prod(m.kernel_size)
                add(name, out[0].numel() * per)
            elif isinstance(m, nn.Linear):
                add(name, out[0].numel() * m.in_features)
            elif isinstance(m, (nn.GRU, nn.LSTM, nn.RNN)):
                steps = x.shape[1] if m.batch_first else x.shape[0]
                kind = type(m).__name__
                proj = m.hidden_size * (2 if m.bidirectional else 1)
                add(name, _rnn_macs(kind, steps, m.input_size, m.hidden_size, m.num_layers,
                                    2 if m.bidirectional else 1, proj))
        return hook

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
             nn.GRU, nn.LSTM, nn.RNN, nn.MultiheadAttention, nn.TransformerEncoderLayer)
    for name, mod in model.named_modules():
        if isinstance(mod, kinds) and name not in covered:
            handles.append(mod.register_forward_hook(hook_for(name, mod)))
    try:
        with evaluating(model), torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return {"total": sum(macs.values()), "per_layer": macs, "source": TORCH_SOURCE}


def _shapes(proto: Any) -> dict[str, list[int]]:
    """Static shapes of every value of ``proto`` with the batch axis set to one."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)  # follows Shape->Reshape chains
    shapes: dict[str, list[int]] = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def count_onnx(proto: Any) -> dict[str, Any]:
    """MACs of one window from an ``onnx.ModelProto`` (fp32 or QDQ int8)."""
    shapes = _shapes(proto)
    macs: dict[str, int] = {}
    unknown = []
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        ins = [shapes.get(n) for n in node.input]
        out = shapes.get(node.output[0]) if node.output else None
        try:
            if node.op_type == "Conv":
                w = ins[1]
                macs[name] = math.prod(out) * math.prod(w[1:])  # type: ignore[arg-type]
            elif node.op_type == "ConvTranspose":
                w = ins[1]
                macs[name] = math.prod(ins[0]) * math.prod(w[1:])  # type: ignore[arg-type]
            elif node.op_type == "Gemm":
                # K and N from the weight B (a constant); M (rows) from A, else the batch of one.
                trans_a, trans_b = (next((a.i for a in node.attribute if a.name == t), 0) for t in ("transA", "transB"))
                k, n = (ins[1][1], ins[1][0]) if trans_b else (ins[1][0], ins[1][1])  # type: ignore[index]
                m = (ins[0][1] if trans_a else ins[0][0]) if ins[0] else 1  # type: ignore[index]
                macs[name] = m * n * k
            elif node.op_type == "MatMul":
                macs[name] = math.prod(out) * ins[0][-1]  # type: ignore[arg-type,index]
            elif node.op_type in ("GRU", "LSTM", "RNN"):
                x, w = ins[0], ins[1]
                dirs, gh, inp = w  # type: ignore[misc]
                hidden = gh // {"GRU": 3, "LSTM": 4}.get(node.op_type, 1)
                macs[name] = _rnn_macs(node.op_type, x[0], inp, hidden, 1, dirs, 0)  # type: ignore[index]
        except (TypeError, IndexError, ValueError):
            unknown.append(name)
    return {"total": sum(macs.values()), "per_layer": macs, "source": ONNX_SOURCE, "unknown_shapes": unknown}
