"""What a saved FairSteer must hold before it is loaded: the JSON metadata's keys and types, the
tensors' shapes against the metadata, finite values, and a layer the artifact was fitted at. An
edited or damaged artifact is refused on load with the file and the field, never later when a
steerer built from it misbehaves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from fairlens._version import __version__
from fairlens.artifacts import META, TENSORS
from fairlens.errors import ArtifactError

_FIX = "refit it (fairlens run, or FairSteer(...).fit(...)) and save it again."

# required metadata keys and the JSON types they must have
_KEYS: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "layer": int,
    "alpha": (int, float),
    "hook_name": str,
    "model": dict,
    "gates": dict,
    "gate_notes": dict,
    "dsv": dict,
    "split_hashes": dict,
    "fitted_templates": list,
    "probe_counts": dict,
    "label_composition": dict,
    "selection": dict,
    "direction_cosines": dict,
}


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return (0,)


def check_artifact(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Raise :class:`ArtifactError` naming the file and field if the saved FairSteer in ``path``
    is incomplete, inconsistent, non-finite, or from a newer fairlens."""
    folder = Path(path)
    meta_file, tensor_file = str(folder / META), str(folder / TENSORS)

    def bad(where: str, what: str) -> ArtifactError:
        return ArtifactError(f"{where}: {what}", _FIX)

    saved = str(meta.get("fairlens_version", "0"))
    if _version(saved) > _version(__version__):
        raise ArtifactError(
            f"{meta_file}: saved by fairlens {saved}, newer than this fairlens {__version__}.",
            "upgrade fairlens to load it.",
        )
    for key, kind in _KEYS.items():
        if key not in meta:
            raise bad(meta_file, f"the field {key!r} is missing")
        value = meta[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(meta_file, f"{key!r} is {value!r}, not a {getattr(kind, '__name__', kind)}")
    if not math.isfinite(float(meta["alpha"])):
        raise bad(meta_file, f"'alpha' is {meta['alpha']!r}, not a finite number")
    model, dsv = meta["model"], meta["dsv"]
    d_model, n_layers = model.get("d_model"), model.get("n_layers")
    if not isinstance(d_model, int) or not isinstance(n_layers, int):
        raise bad(meta_file, "'model' lacks integer 'd_model' and 'n_layers'")
    layer = meta["layer"]
    if not 0 <= layer < n_layers:
        raise bad(meta_file, f"'layer' is {layer}, outside the model's 0..{n_layers - 1}")
    hooks = dsv.get("hook_names")
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        raise bad(meta_file, "'dsv.hook_names' is not a list of hook names")
    if meta["hook_name"] not in hooks or f".{layer}." not in meta["hook_name"]:
        raise bad(
            meta_file,
            f"'layer' {layer} / 'hook_name' {meta['hook_name']!r} is not a hook the DSV was "
            "fitted at",
        )
    expected = {"dsv": (len(hooks), d_model), "residual_norms": (len(hooks),)}
    for name, gate in meta["gates"].items():
        gate_hooks = gate.get("hook_names") if isinstance(gate, dict) else None
        if not isinstance(gate_hooks, list):
            raise bad(meta_file, f"'gates.{name}' lacks its hook names")
        expected[f"gate_{name}_coef"] = (len(gate_hooks), d_model)
        expected[f"gate_{name}_intercept"] = (len(gate_hooks),)
    for name, shape in expected.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise bad(tensor_file, f"the tensor {name!r} is missing")
        if tuple(tensor.shape) != shape:
            raise bad(
                tensor_file, f"{name!r} has shape {tuple(tensor.shape)}, the metadata says {shape}"
            )
        if not tensor.is_floating_point():
            raise bad(tensor_file, f"{name!r} has dtype {tensor.dtype}, not a float type")
        if not bool(torch.isfinite(tensor).all()):
            raise bad(tensor_file, f"{name!r} contains NaN or infinite values")
