"""Models: the spec string, building, weights as arrays and as bytes, and update checks.

A model spec is ``NAME:SHAPE:CLASSES`` (e.g. ``mlp:1x8x8:10``); two nodes can share a model
iff their spec strings are equal. Weights travel as msgpack of ``(dtype, shape, raw bytes)``
per array (never pickle) and are validated on decode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgpack
import numpy as np
import torch
from torch import nn

MODEL_NAMES = ("mlp", "cnn")
MLP_HIDDEN = 128
WEIGHTS_FORMAT = 1
MAX_WEIGHTS_BYTES = 256 * 1024**2
MAX_ARRAYS = 1024
MAX_NDIM = 8
ALLOWED_DTYPES = frozenset({"<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1"})
#: A Flower message may be this many times the model's bytes, plus `MESSAGE_SLACK`: room for
#: the same arrays in float64 and for Flower's framing (an .npy header per array, config and
#: metrics), far below an update hundreds of times the model.
MESSAGE_FACTOR = 2
MESSAGE_SLACK = 1024**2


class ModelSpecError(ValueError):
    """A model spec that cannot be parsed or built."""


class WeightsError(ValueError):
    """Weights that do not fit a model, or bytes that are not a valid weights payload."""


class ModelSpec(NamedTuple):
    """The parts of a model spec string."""

    name: str
    input_shape: tuple[int, ...]
    classes: int


def model_spec(name: str, input_shape: tuple[int, ...] | list[int], classes: int) -> str:
    """Return the spec string ``NAME:SHAPE:CLASSES``, e.g. ``mlp:1x8x8:10``."""
    spec = f"{name}:{'x'.join(str(int(d)) for d in input_shape)}:{int(classes)}"
    parse_spec(spec)  # validates
    return spec


def parse_spec(spec: str) -> ModelSpec:
    """Parse a spec string, raising `ModelSpecError` with the reason when it is malformed."""
    if not isinstance(spec, str):
        raise ModelSpecError(f"model spec must be a string, got {type(spec).__name__}")
    parts = spec.split(":")
    if len(parts) != 3:
        raise ModelSpecError(f"model spec must be NAME:SHAPE:CLASSES (e.g. mlp:1x8x8:10): {spec!r}")
    name, shape_text, classes_text = parts
    if name not in MODEL_NAMES:
        raise ModelSpecError(f"unknown model {name!r} in {spec!r}; known: {', '.join(MODEL_NAMES)}")
    try:
        shape = tuple(int(d) for d in shape_text.split("x"))
        classes = int(classes_text)
    except ValueError:
        raise ModelSpecError(f"bad shape or class count in model spec {spec!r}") from None
    if not shape or any(d < 1 or d > 4096 for d in shape) or len(shape) > 4:
        raise ModelSpecError(f"input shape must be 1-4 positive dimensions: {spec!r}")
    if not 2 <= classes <= 10_000:
        raise ModelSpecError(f"classes must be in [2, 10000]: {spec!r}")
    if name == "cnn" and len(shape) != 3:
        raise ModelSpecError(f"cnn needs an input shape CxHxW (e.g. 1x8x8): {spec!r}")
    return ModelSpec(name, shape, classes)


def build_model(spec: str, seed: int | None = None) -> nn.Module:
    """Build the model a spec names.

    Parameters
    ----------
    spec : str
        ``mlp``: flatten -> 128 hidden (ReLU) -> classes. ``cnn``: two 3x3 convolutions
        (16, 32 channels), 2x2 max-pool when the image allows, pooled to at most 4x4,
        64 hidden -> classes.
    seed : int or None
        Seed of the initial weights through a private ``torch.Generator`` (default: None,
        torch's own initialisation).
    """
    name, shape, classes = parse_spec(spec)
    if name == "mlp":
        model: nn.Module = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(shape), MLP_HIDDEN),
            nn.ReLU(),
            nn.Linear(MLP_HIDDEN, classes),
        )
    else:
        channels, height, width = shape
        pool = 2 if min(height, width) >= 4 else 1
        side_h, side_w = min(4, height // pool), min(4, width // pool)
        model = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(pool) if pool > 1 else nn.Identity(),
            nn.AdaptiveAvgPool2d((side_h, side_w)),
            nn.Flatten(),
            nn.Linear(32 * side_h * side_w, 64),
            nn.ReLU(),
            nn.Linear(64, classes),
        )
    if seed is not None:
        _seeded_init(model, seed)
    return model


def _seeded_init(model: nn.Module, seed: int) -> None:
    """Re-run torch's default Linear/Conv initialisation from a private generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=gen)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(module.bias, -bound, bound, generator=gen)


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Copies of the model's state (parameters and buffers) as numpy arrays, in order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load ``weights`` into ``model``; raises `WeightsError` on a count or shape mismatch."""
    state = model.state_dict()
    if len(weights) != len(state):
        raise WeightsError(f"expected {len(state)} arrays, got {len(weights)}")
    new_state = {}
    for (key, ref), arr in zip(state.items(), weights, strict=True):
        arr = np.asarray(arr)
        if tuple(arr.shape) != tuple(ref.shape):
            raise WeightsError(
                f"array {key!r}: expected shape {tuple(ref.shape)}, got {tuple(arr.shape)}"
            )
        new_state[key] = torch.as_tensor(arr.copy(), dtype=ref.dtype)
    model.load_state_dict(new_state, strict=True)


def message_limit(weights: list[np.ndarray]) -> int:
    """Largest Flower message (bytes) a group training ``weights`` sends or accepts.

    ``MESSAGE_FACTOR`` times their byte size plus ``MESSAGE_SLACK``; both ends of a Flower
    session give it to gRPC, which refuses a bigger message before Python decodes it.
    """
    size = sum(int(np.asarray(w).nbytes) for w in weights)
    return min(MESSAGE_FACTOR * size + MESSAGE_SLACK, 2**31 - 1)


def weights_to_bytes(weights: list[np.ndarray]) -> bytes:
    """Encode arrays as msgpack ``{"v": 1, "arrays": [[dtype, shape, raw], ...]}``."""
    arrays = []
    for arr in weights:
        arr = np.ascontiguousarray(arr)
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise WeightsError(f"dtype {arr.dtype} cannot be encoded")
        arrays.append([arr.dtype.str, list(arr.shape), arr.tobytes()])
    return msgpack.packb({"v": WEIGHTS_FORMAT, "arrays": arrays}, use_bin_type=True)


def weights_from_bytes(data: bytes, max_bytes: int = MAX_WEIGHTS_BYTES) -> list[np.ndarray]:
    """Decode `weights_to_bytes` output, validating everything; raises `WeightsError`.

    Parameters
    ----------
    data : bytes
        The payload.
    max_bytes : int
        Largest payload accepted (default: 256 MiB).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WeightsError(f"weights payload must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WeightsError(f"weights payload of {len(data)} bytes exceeds the cap of {max_bytes}")
    try:
        obj = msgpack.unpackb(
            data, raw=False, max_bin_len=max_bytes, max_array_len=MAX_ARRAYS * 4, max_map_len=16
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WeightsError(f"weights payload is not valid msgpack: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != WEIGHTS_FORMAT:
        raise WeightsError("weights payload has no supported format version")
    arrays = obj.get("arrays")
    if not isinstance(arrays, list) or len(arrays) > MAX_ARRAYS:
        raise WeightsError("weights payload 'arrays' must be a list of at most 1024 entries")
    out = []
    for i, entry in enumerate(arrays):
        if not (isinstance(entry, list) and len(entry) == 3):
            raise WeightsError(f"array {i}: expected [dtype, shape, bytes]")
        dtype, shape, raw = entry
        if dtype not in ALLOWED_DTYPES:
            raise WeightsError(f"array {i}: dtype {dtype!r} not allowed")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and d >= 0 for d in shape)
        ):
            raise WeightsError(f"array {i}: bad shape {shape!r}")
        if not isinstance(raw, bytes):
            raise WeightsError(f"array {i}: data must be bytes")
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise WeightsError(f"array {i}: {len(raw)} bytes for shape {shape} {dtype}")
        out.append(np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy())
    return out


def check_update(
    weights: list[np.ndarray], reference: list[np.ndarray], max_norm_ratio: float = 10.0
) -> str | None:
    """Return why ``weights`` must not be aggregated against ``reference``, or None if fine.

    Rejected: a different number of arrays, a shape mismatch, NaN/inf, or a global L2 norm
    larger than ``max_norm_ratio`` times the reference's (default: 10; honest local training
    from a shared model changes the norm by far less).
    """
    if len(weights) != len(reference):
        return f"{len(weights)} arrays instead of {len(reference)}"
    total = 0.0
    ref_total = 0.0
    for i, (arr, ref) in enumerate(zip(weights, reference, strict=True)):
        arr = np.asarray(arr)
        if tuple(arr.shape) != tuple(np.shape(ref)):
            return f"array {i} has shape {tuple(arr.shape)} instead of {tuple(np.shape(ref))}"
        if not np.issubdtype(arr.dtype, np.number):
            return f"array {i} has non-numeric dtype {arr.dtype}"
        a64 = arr.astype(np.float64)
        if not np.isfinite(a64).all():
            return f"array {i} contains NaN or inf"
        total += float(np.square(a64).sum())
        ref_total += float(np.square(np.asarray(ref, dtype=np.float64)).sum())
    norm, ref_norm = math.sqrt(total), math.sqrt(ref_total)
    if not math.isfinite(norm) or norm > max_norm_ratio * max(ref_norm, 1e-6):
        return f"weight norm {norm:.3g} exceeds {max_norm_ratio:g}x the reference {ref_norm:.3g}"
    return None
