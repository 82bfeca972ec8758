"""What an exported model needs to be used without the toolkit: the preprocessing, as ONNX metadata.

Every key is stored in the model's ``metadata_props`` under ``edgedistill.<name>`` with a JSON value, so
any ONNX reader (``onnx.load(...).metadata_props`` or ONNX Runtime's
``session.get_modelmeta().custom_metadata_map``) can recover how raw windows must be prepared:

* ``input_shape``: per-sample shape the model takes, ``[channels, length]`` or ``[channels, h, w]``;
* ``channels``: which channels of the raw recording, in order, the model reads (``data.views.x`` of the
  recipe; ``null`` = all of them in their stored order);
* ``window``: ``{"length", "stride"}`` when the recipe cut windows from longer recordings (``data.window``, or a
  stream archive's ``window``/``stride`` protocol keys); ``null`` when the windows came pre-cut;
* ``channel_names``: the name of each channel the model reads, in input order (``null`` in files exported before
  the names were stored);
* ``sampling_rate``: samples per second of the windows the model was trained on, when the data says it (an
  archive's ``rate``); ``null`` = unknown (a user's CSV or array carries no clock rate);
* ``normalization``: ``{"mode", "mean", "std"}`` fitted on the training split: ``(x - mean) / std`` per
  channel (``per_channel``), with one value (``global``), or nothing (``none``);
* ``task``, ``classes`` (output index -> class name), ``target_scale`` (regression: outputs are
  standardised, ``y = out * std + mean``);
* ``input_name``, ``output_name``, ``quantization``, ``exporter``, ``model``, ``toolkit_version``,
  ``source_run``, ``seed``, ``checkpoint`` and ``verification`` (the checks made at export).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from edgedistill.errors import UserInputError

PREFIX = "edgedistill."
SCHEMA = 1


@dataclass
class ModelMetadata:
    task: str
    input_shape: list[int]
    normalization: dict[str, Any]
    classes: Optional[list[str]] = None
    target_scale: Optional[list[list[float]]] = None
    channels: Optional[list[int]] = None
    window: Optional[dict[str, Any]] = None
    channel_names: Optional[list[str]] = None  # (absent before streaming: such files still load, with None)
    sampling_rate: Optional[float] = None
    input_name: str = "input"
    output_name: str = "logits"
    quantization: str = "none"
    exporter: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    toolkit_version: str = ""
    source_run: str = ""
    seed: Optional[int] = None
    checkpoint: str = ""
    verification: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    def to_props(self) -> dict[str, str]:
        """``edgedistill.<key>`` -> JSON text, the form ONNX ``metadata_props`` hold."""
        return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelMetadata":
        mine = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not mine:
            raise UserInputError(
                f"{source}: has no edgedistill metadata (not exported by 'edgedistill export'); "
                "the preprocessing it needs is unknown"
            )
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, text in mine.items():
            if key not in known:
                continue  # written by a newer toolkit: ignore what this one does not know
            try:
                values[key] = json.loads(text)
            except json.JSONDecodeError:
                raise UserInputError(f"{source}: metadata '{PREFIX}{key}' is not valid JSON") from None
        missing = [k for k in ("task", "input_shape", "normalization") if k not in values]
        if missing:
            raise UserInputError(f"{source}: metadata lacks {', '.join(PREFIX + k for k in missing)}")
        return cls(**values)

    @property
    def n_outputs(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return len(self.target_scale[0]) if self.target_scale else 1


def from_run(info: Any, data_cfg: Any, student_cfg: Any, *, run_dir: Path, seed: int, which: str) -> ModelMetadata:
    """Metadata for the student of a run (``info``: the prepared data's ``DataInfo``; configs from the recipe)."""
    from edgedistill import __version__

    views = getattr(data_cfg, "views", {}) or {}
    channels = list(views["x"]) if "x" in views else None
    window, rate = stream_protocol(data_cfg)
    names = list(getattr(info, "channels", None) or [])
    target_scale = [list(v) for v in info.target_scale] if info.target_scale is not None else None
    return ModelMetadata(
        task=info.task,
        input_shape=[int(s) for s in info.input_shape],
        normalization=dict(info.normalization["x"]),
        classes=list(info.classes) if info.classes is not None else None,
        target_scale=target_scale,
        channels=channels,
        window=window,
        channel_names=[str(c) for c in names] if len(names) == int(info.input_shape[0]) else None,
        sampling_rate=rate,
        output_name="logits" if info.task == "classification" else "output",
        model={"name": student_cfg.label, **student_cfg.kwargs},  # a class name, not the path of a user file
        toolkit_version=__version__,
        source_run=str(Path(run_dir).resolve()),
        seed=seed,
        checkpoint=which,
    )


def stream_protocol(data_cfg: Any) -> tuple[Optional[dict[str, int]], Optional[float]]:
    """(window ``{"length", "stride"}`` or None, sampling rate in Hz or None) of a recipe's data section.

    ``data.window`` wins (its stride defaults to its length, as in ``data.windowing``). Otherwise a public archive
    that cuts windows from a stream has ``window``/``stride``/``rate`` protocol keys (its loader's defaults filled in
    with ``data.params``); an archive with only ``rate`` (pre-cut windows) gives the rate alone. Anything else (a
    user's file, synthetic data) records no rate: it is unknown, never guessed."""
    window: Optional[dict[str, int]] = None
    rate: Optional[float] = None
    name = getattr(data_cfg, "name", None)
    if name is not None:
        from edgedistill.data.archives.registered import archives, protocol

        archive = archives().get(str(name))
        if archive is not None:
            proto = protocol(archive, dict(getattr(data_cfg, "params", {}) or {}))
            if _number(proto.get("rate")):
                rate = float(proto["rate"])
            if _number(proto.get("window")) and _number(proto.get("stride")):
                window = {"length": int(proto["window"]), "stride": int(proto["stride"])}
    cut = getattr(data_cfg, "window", None)
    if cut is not None:
        window = {"length": int(cut.length), "stride": int(cut.stride or cut.length)}
    return window, rate


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def attach(model_proto: Any, meta: ModelMetadata) -> None:
    """Replace the edgedistill entries of an ``onnx.ModelProto``'s metadata_props with ``meta``."""
    keep = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(PREFIX)]
    del model_proto.metadata_props[:]
    for key, value in keep + sorted(meta.to_props().items()):
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    model_proto.doc_string = (
        f"edgedistill {meta.toolkit_version} student ({meta.model.get('name', '?')}, {meta.task}); "
        f"quantization: {meta.quantization}. Preprocessing in metadata_props '{PREFIX}*'."
    )


def read(path: str | Path) -> ModelMetadata:
    """The metadata of an exported ``.onnx`` file (read with ONNX Runtime; the onnx package is not needed)."""
    path = Path(path)
    session = _session(path)
    return ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map), f"'{path}'")


def _session(path: Path, threads: Optional[int] = None) -> Any:
    if not path.is_file():
        raise UserInputError(f"model file '{path}' does not exist")
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - a file ORT cannot load is a bad file for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"model file '{path}' cannot be loaded by ONNX Runtime: {first}") from None


def require_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserInputError(
            "onnxruntime is not installed; install the deploy extra: pip install 'edgedistill[deploy]'"
        ) from None
    return ort


def require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise UserInputError("onnx is not installed; install the deploy extra: pip install 'edgedistill[deploy]'") from None
    return onnx
