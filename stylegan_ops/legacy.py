"""Safe import of NVIDIA's StyleGAN2 ``.pkl`` files (no code from the pickle ever runs).

Those files pickle a tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` states:
dicts with ``version``, ``name``, ``static_kwargs``, ``components`` (nested Networks),
``build_module_src``, ``build_func_name`` and ``variables`` (a list of ``(name, array)``).
A restricted unpickler maps that one class to a plain record, allows numpy's array
reconstruction, and refuses every other global; the embedded source is never executed.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.errors import StageError
from stylegan_ops.networks.presets import NetworkConfig

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
}

# static_kwargs we understand → our config field (None: accepted if it has this value)
G_KWARGS: dict[str, Any] = {
    "resolution": "resolution", "num_channels": "num_channels", "fmap_base": "fmap_base",
    "fmap_max": "fmap_max", "latent_size": "z_dim", "dlatent_size": "w_dim",
    "mapping_layers": "mapping_layers", "mapping_lrmul": "mapping_lrmul",
    "mbstd_group_size": "mbstd_group", "mbstd_num_features": "mbstd_features",
}
FIXED_KWARGS: dict[str, Any] = {
    "fmap_decay": 1.0, "fmap_min": 1, "label_size": 0, "architecture": None,
    "nonlinearity": "lrelu", "resample_kernel": [1, 3, 3, 1], "fused_modconv": None,
    "truncation_psi": None, "truncation_cutoff": None, "dlatent_avg_beta": None,
    "style_mixing_prob": None, "randomize_noise": None, "is_template_graph": None,
    "components": None, "mapping_fmaps": None, "mapping_nonlinearity": "lrelu",
    "normalize_latents": True, "dtype": "float32", "num_fp16_res": 0, "conv_clamp": None,
    "func_name": None, "synthesis_func": None, "mapping_func": None, "use_noise": True,
    "dlatent_broadcast": None, "use_wscale": True,
}


class NetworkRecord:
    """What a pickled ``dnnlib.tflib.network.Network`` becomes: just its state dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("dnnlib.tflib.network", "Network"):
            return NetworkRecord
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from the pickle")


def _unpickle(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise StageError(f"no such file: {path}") from exc
    except pickle.UnpicklingError as exc:
        raise StageError(f"{path}: {exc}") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise StageError(f"{path}: not a readable NVIDIA network pickle: {exc}") from exc


def read_pickle(path: Path) -> tuple[NetworkRecord, ...]:
    obj = _unpickle(path)
    if not (isinstance(obj, tuple) and len(obj) == 3
            and all(isinstance(n, NetworkRecord) for n in obj)):
        raise StageError(f"{path}: expected a tuple (G, D, Gs) of networks")
    return obj


def read_network(path: Path) -> NetworkRecord:
    """A pickle holding one network (NVIDIA's metric networks: vgg16*.pkl)."""
    obj = _unpickle(path)
    if not isinstance(obj, NetworkRecord) or not isinstance(obj.state.get("variables"), list):
        raise StageError(f"{path}: expected one pickled network with a variable list")
    return obj


def variables_in_order(net: NetworkRecord) -> list[tuple[str, np.ndarray]]:
    """(name, array) in the network's own order, then each component's, depth first."""
    out = [(str(name), np.asarray(value)) for name, value in net.state["variables"]]
    for comp in (net.state.get("components") or {}).values():
        if isinstance(comp, NetworkRecord):
            out += [(f"{comp.state['name']}/{n}", v) for n, v in variables_in_order(comp)]
    return out


def _variables(net: NetworkRecord, prefix: str = "") -> dict[str, np.ndarray]:
    """A network's variables and its components', with component names as prefixes."""
    out = {f"{prefix}{name}": np.asarray(value) for name, value in net.state["variables"]}
    for comp in (net.state.get("components") or {}).values():
        if isinstance(comp, NetworkRecord):
            out.update(_variables(comp, f"{comp.state['name']}/"))
    return out


def _kwargs(net: NetworkRecord) -> dict[str, Any]:
    kwargs = dict(net.state.get("static_kwargs") or {})
    for comp in (net.state.get("components") or {}).values():
        if isinstance(comp, NetworkRecord):
            for k, v in (comp.state.get("static_kwargs") or {}).items():
                kwargs.setdefault(k, v)
    return kwargs


def config_from(g: NetworkRecord) -> NetworkConfig:
    """Our NetworkConfig from G's static_kwargs (and its components')."""
    version = int(g.state.get("version", 0))
    if version < 4:
        raise StageError(f"network pickle version {version} is too old (need >= 4)")
    kwargs = _kwargs(g)
    unknown = sorted(k for k in kwargs if k not in G_KWARGS and k not in FIXED_KWARGS)
    if unknown:
        raise StageError(f"unknown static_kwargs in the pickle: {', '.join(unknown)}")
    for key, want in FIXED_KWARGS.items():
        if want is not None and key in kwargs and kwargs[key] != want:
            raise StageError(f"unsupported static_kwargs {key}={kwargs[key]!r} (need {want!r})")
    values = {field: kwargs[key] for key, field in G_KWARGS.items() if key in kwargs}
    if "w_dim" not in values and "z_dim" in values:
        values["w_dim"] = values["z_dim"]
    values.setdefault("mapping_layers", 8)
    return NetworkConfig(**values)


@dataclass
class Imported:
    config: NetworkConfig
    G: dict[str, np.ndarray]
    D: dict[str, np.ndarray]
    Gs: dict[str, np.ndarray]
    source: str


def load_pickle(path: Path) -> Imported:
    """Read an NVIDIA pickle into our names: ``G_mapping/…``, ``G_synthesis/…``, D's own."""
    g, d, gs = read_pickle(path)
    cfg = config_from(gs)
    return Imported(cfg, _variables(g), _variables(d), _variables(gs), str(path))
