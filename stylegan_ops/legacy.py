"""Import of NVIDIA's StyleGAN2 ``.pkl`` files as NVIDIA's ``dnnlib`` writes them.

Such a file pickles a tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` states:
dicts with ``version``, ``name``, ``static_kwargs``, ``components`` (nested Networks),
``build_module_src``, ``build_func_name`` and ``variables``, a list of ``(name, value)``
pairs in creation order. G and Gs (``G_main``) own ``lod`` and ``dlatent_avg`` and have the
components ``synthesis`` (noise inputs first, then the layers) and ``mapping`` (created
with ``dlatent_broadcast``). The file is read by :mod:`stylegan_ops.safepickle`, which maps
``Network`` to :class:`NetworkRecord` and rebuilds only plain arrays; the embedded source is
never executed. Every setting and shape is checked here before any network is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops import safepickle
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import sha256_file
from stylegan_ops.networks.presets import NetworkConfig
from stylegan_ops.networks.snapshot import check_shapes

# NVIDIA's defaults (G_main → G_mapping / G_synthesis_stylegan2, D_stylegan2) for the
# settings we map, and the NetworkConfig field each becomes
SETTINGS: dict[str, tuple[str, Any]] = {
    "resolution": ("resolution", 1024), "num_channels": ("num_channels", 3),
    "fmap_base": ("fmap_base", 16 << 10), "fmap_max": ("fmap_max", 512),
    "latent_size": ("z_dim", 512), "dlatent_size": ("w_dim", 512),
    "mapping_layers": ("mapping_layers", 8), "mapping_lrmul": ("mapping_lrmul", 0.01),
    "mbstd_group_size": ("mbstd_group", 4), "mbstd_num_features": ("mbstd_features", 1),
}
# what a file built by another network of ours would hold; a shape beyond these is refused
# before anything is allocated
BOUNDS: dict[str, tuple[float, float]] = {
    "resolution": (4, 4096), "num_channels": (1, 4), "fmap_base": (1, 1 << 20),
    "fmap_max": (1, 4096), "latent_size": (1, 4096), "dlatent_size": (1, 4096),
    "mapping_layers": (1, 32), "mapping_lrmul": (1e-6, 1e3), "mbstd_group_size": (0, 256),
    "mbstd_num_features": (1, 64), "mapping_fmaps": (1, 4096), "dlatent_broadcast": (1, 64),
}
# settings our networks implement only with this value (None: any value, no effect)
FIXED: dict[str, Any] = {
    "fmap_decay": 1.0, "fmap_min": 1, "label_size": 0, "nonlinearity": "lrelu",
    "resample_kernel": [1, 3, 3, 1], "mapping_nonlinearity": "lrelu",
    "normalize_latents": True, "dtype": "float32", "num_fp16_res": 0, "conv_clamp": None,
    "use_noise": True, "use_wscale": True, "synthesis_func": "G_synthesis_stylegan2",
    "mapping_func": "G_mapping", "fused_modconv": None, "truncation_psi": None,
    "truncation_cutoff": None, "truncation_psi_val": None, "truncation_cutoff_val": None,
    "dlatent_avg_beta": None, "style_mixing_prob": None, "randomize_noise": None,
    "is_template_graph": None, "is_training": None, "is_validation": None,
    "return_dlatents": None, "mapping_fmaps": None, "dlatent_broadcast": None,
    "architecture": None,
}
ARCHITECTURE = {"G": "skip", "D": "resnet"}
BUILD_FUNCS = {"G": "G_main", "G_synthesis": "G_synthesis_stylegan2",
               "G_mapping": "G_mapping", "D": "D_stylegan2"}
IGNORED_VARIABLES = {"lod"}  # G_main's progressive-growing level: StyleGAN2 never reads it
KINDS = {"weights": "f"}  # numpy kinds a weight may have (float16/32/64)


class NetworkRecord:
    """What a pickled ``dnnlib.tflib.network.Network`` becomes: just its state dict."""

    state: dict[str, Any] | None = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


CLASSES = {("dnnlib.tflib.network", "Network"): NetworkRecord}


def _check_record(net: Any, where: str, depth: int = 0) -> dict[str, Any]:
    """The validated state of one Network record (types of every field, components too)."""
    state = net.state if isinstance(net, NetworkRecord) else None
    if not isinstance(state, dict):
        raise StageError(f"{where}: not a pickled dnnlib Network")
    version = state.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StageError(f"{where}: version is {_kind(version)}, not an int")
    for key in ("name", "build_func_name", "build_module_src"):
        if not isinstance(state.get(key, ""), (str, type(None))):
            raise StageError(f"{where}: {key} is {_kind(state[key])}, not a string")
    kwargs = state.get("static_kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise StageError(f"{where}: static_kwargs is {_kind(kwargs)}, not a dict of names")
    variables = state.get("variables")
    if not isinstance(variables, list):
        raise StageError(f"{where}: variables is {_kind(variables)}, not a list")
    for i, pair in enumerate(variables):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], (np.ndarray, np.generic))):
            raise StageError(f"{where}: variable {i} is not a (name, array) pair")
        if np.asarray(pair[1]).dtype.kind not in KINDS["weights"]:
            raise StageError(f"{where}: variable {pair[0]} has dtype {pair[1].dtype}, "
                             "not floating point")
    components = state.get("components") or {}
    if not isinstance(components, dict):
        raise StageError(f"{where}: components is {_kind(components)}, not a dict")
    if depth > 2 and components:
        raise StageError(f"{where}: components nested too deeply")
    for key, comp in components.items():
        _check_record(comp, f"{where} component {key!r}", depth + 1)
    return state


def _kind(value: Any) -> str:
    return f"a {type(value).__name__}"


def read_pickle(path: Path) -> tuple[NetworkRecord, NetworkRecord, NetworkRecord]:
    obj = safepickle.load(path, CLASSES)
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise StageError(f"{path}: expected a tuple (G, D, Gs) of networks, got "
                         f"{_kind(obj)}{f' of {len(obj)}' if isinstance(obj, tuple) else ''}")
    for net, role in zip(obj, ("G", "D", "Gs"), strict=True):
        version = _check_record(net, f"{path}: {role}")["version"]
        if version < 4:  # StyleGAN2's dnnlib writes 4; older ones are StyleGAN (1) networks
            raise StageError(f"{path}: {role} is network pickle version {version}, too old "
                             "for StyleGAN2 (need >= 4)")
    return obj


def read_network(path: Path) -> NetworkRecord:
    """A pickle holding one network (NVIDIA's metric networks: vgg16*.pkl)."""
    obj = safepickle.load(path, CLASSES)
    if not isinstance(obj, NetworkRecord):
        raise StageError(f"{path}: expected one pickled network, got {_kind(obj)}")
    _check_record(obj, str(path))
    return obj


def _state(net: NetworkRecord) -> dict[str, Any]:
    assert net.state is not None  # checked by _check_record
    return net.state


def _components(net: NetworkRecord) -> dict[str, NetworkRecord]:
    return dict(_state(net).get("components") or {})


def variables_in_order(net: NetworkRecord) -> list[tuple[str, np.ndarray]]:
    """(name, array) in the network's own order, then each component's, depth first."""
    out = [(name, np.asarray(value)) for name, value in _state(net)["variables"]]
    for comp in _components(net).values():
        out += [(f"{_state(comp).get('name')}/{n}", v) for n, v in variables_in_order(comp)]
    return out


def _variables(net: NetworkRecord, ignored: list[str], role: str) -> dict[str, np.ndarray]:
    """A network's variables by our names (components prefixed by their own names), minus
    the ones NVIDIA's networks own but never read (listed in ``ignored``)."""
    out: dict[str, np.ndarray] = {}
    for name, value in variables_in_order(net):
        if name in IGNORED_VARIABLES:
            ignored.append(f"{role}/{name}")
        elif name in out:
            raise StageError(f"{role}: variable {name} appears twice")
        else:
            out[name] = value
    return out


def _setting(kwargs: dict[str, Any], key: str, default: Any, where: str) -> Any:
    value = kwargs.get(key, default)
    lo, hi = BOUNDS[key]
    number = (int, float) if isinstance(default, float) else (int,)
    if not isinstance(value, number) or isinstance(value, bool) or not lo <= value <= hi:
        raise StageError(f"{where}: {key}={value!r} is not a supported value "
                         f"(expected {number[-1].__name__} in [{lo:g}, {hi:g}])")
    return value


def _check_fixed(kwargs: dict[str, Any], where: str, role: str) -> None:
    unknown = sorted(k for k in kwargs if k not in SETTINGS and k not in FIXED)
    if unknown:
        raise StageError(f"{where}: unknown static_kwargs in the pickle: {', '.join(unknown)}")
    for key, want in FIXED.items():
        if want is not None and key in kwargs and kwargs[key] != want:
            raise StageError(f"{where}: unsupported static_kwargs {key}={kwargs[key]!r} "
                             f"(need {want!r})")
    arch = kwargs.get("architecture", ARCHITECTURE[role])
    if arch != ARCHITECTURE[role]:
        raise StageError(f"{where}: architecture={arch!r} is not supported for {role} "
                         f"(need {ARCHITECTURE[role]!r})")


def config_from(g: NetworkRecord, d: NetworkRecord, where: str) -> NetworkConfig:
    """Our NetworkConfig from G's static_kwargs and its components' and D's, with NVIDIA's
    defaults for what they leave out; bounds checked, nothing allocated."""
    kwargs = dict(_state(g).get("static_kwargs") or {})
    _check_fixed(kwargs, f"{where}: G", "G")
    _check_func(g, "G", f"{where}: G")
    for key, comp in _components(g).items():
        at = f"{where}: G component {key!r}"
        comp_kwargs = dict(_state(comp).get("static_kwargs") or {})
        _check_fixed(comp_kwargs, at, "G")
        _check_func(comp, str(_state(comp).get("name")), at)
        for k, v in comp_kwargs.items():
            if k in kwargs and kwargs[k] != v:
                raise StageError(f"{at}: {k}={v!r} but G has {kwargs[k]!r}")
            kwargs[k] = v
    d_kwargs = dict(_state(d).get("static_kwargs") or {})
    _check_fixed(d_kwargs, f"{where}: D", "D")
    _check_func(d, "D", f"{where}: D")
    for key in ("resolution", "num_channels", "fmap_base", "fmap_max"):
        gv, dv = (kw.get(key, SETTINGS[key][1]) for kw in (kwargs, d_kwargs))
        if gv != dv:
            raise StageError(f"{where}: G has {key}={gv!r} but D has {dv!r}")
    values = {}
    for key, (name, default) in SETTINGS.items():
        role, source = ("D", d_kwargs) if key.startswith("mbstd") else ("G", kwargs)
        values[name] = _setting(source, key, default, f"{where}: {role}")
    cfg = NetworkConfig(**values)
    fmaps = _setting(kwargs, "mapping_fmaps", 512, f"{where}: G")  # G_mapping's default
    if fmaps != cfg.w_dim and cfg.mapping_layers > 1:  # our hidden layers are w_dim wide
        raise StageError(f"{where}: G has mapping_fmaps={fmaps}, not dlatent_size="
                         f"{cfg.w_dim} (not supported)")
    if _setting(kwargs, "dlatent_broadcast", cfg.num_ws, f"{where}: G") != cfg.num_ws:
        raise StageError(f"{where}: G has dlatent_broadcast={kwargs['dlatent_broadcast']} "
                         f"but {cfg.resolution} px needs {cfg.num_ws}")
    return cfg


def _check_func(net: NetworkRecord, role: str, where: str) -> None:
    want = BUILD_FUNCS.get(role)
    got = _state(net).get("build_func_name")
    if want is not None and got is not None and got.rsplit(".", 1)[-1] != want:
        raise StageError(f"{where}: built by {got!r}, not StyleGAN2's {want!r} (not supported)")


def nvidia_shapes(cfg: NetworkConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """The variables (our names, NVIDIA's layouts) that G and D of ``cfg`` own, by shape."""
    nf, top, rgb = cfg.channels, cfg.log2, cfg.num_channels
    g: dict[str, tuple[int, ...]] = {"dlatent_avg": (cfg.w_dim,)}
    for i in range(cfg.mapping_layers):
        g[f"G_mapping/Dense{i}/weight"] = (cfg.z_dim if i == 0 else cfg.w_dim, cfg.w_dim)
        g[f"G_mapping/Dense{i}/bias"] = (cfg.w_dim,)
    for i in range(cfg.num_ws - 1):
        side = 2 ** ((i + 5) // 2)
        g[f"G_synthesis/noise{i}"] = (1, 1, side, side)
    g["G_synthesis/4x4/Const/const"] = (1, nf(1), 4, 4)

    def layer(name: str, cin: int, cout: int, k: int, noise: bool) -> None:
        g.update({f"G_synthesis/{name}/weight": (k, k, cin, cout),
                  f"G_synthesis/{name}/mod_weight": (cfg.w_dim, cin),
                  f"G_synthesis/{name}/mod_bias": (cin,),
                  f"G_synthesis/{name}/bias": (cout,)})
        if noise:
            g[f"G_synthesis/{name}/noise_strength"] = ()

    layer("4x4/Conv", nf(1), nf(1), 3, True)
    layer("4x4/ToRGB", nf(1), rgb, 1, False)
    for r in range(3, top + 1):
        res = f"{2 ** r}x{2 ** r}"
        layer(f"{res}/Conv0_up", nf(r - 2), nf(r - 1), 3, True)
        layer(f"{res}/Conv1", nf(r - 1), nf(r - 1), 3, True)
        layer(f"{res}/ToRGB", nf(r - 1), rgb, 1, False)
    d: dict[str, tuple[int, ...]] = {
        f"{cfg.resolution}x{cfg.resolution}/FromRGB/weight": (1, 1, rgb, nf(top - 1)),
        f"{cfg.resolution}x{cfg.resolution}/FromRGB/bias": (nf(top - 1),)}
    for r in range(top, 2, -1):
        res = f"{2 ** r}x{2 ** r}"
        d.update({f"{res}/Conv0/weight": (3, 3, nf(r - 1), nf(r - 1)),
                  f"{res}/Conv0/bias": (nf(r - 1),),
                  f"{res}/Conv1_down/weight": (3, 3, nf(r - 1), nf(r - 2)),
                  f"{res}/Conv1_down/bias": (nf(r - 2),),
                  f"{res}/Skip/weight": (1, 1, nf(r - 1), nf(r - 2))})
    extra = cfg.mbstd_features if cfg.mbstd_group > 1 else 0
    d.update({"4x4/Conv/weight": (3, 3, nf(1) + extra, nf(1)), "4x4/Conv/bias": (nf(1),),
              "4x4/Dense0/weight": (nf(1) * 16, nf(0)), "4x4/Dense0/bias": (nf(0),),
              "Output/weight": (nf(0), 1), "Output/bias": (1,)})
    return {"G": g, "D": d}


@dataclass
class Imported:
    config: NetworkConfig
    G: dict[str, np.ndarray]
    D: dict[str, np.ndarray]
    Gs: dict[str, np.ndarray]
    source: str
    record: dict[str, Any] = field(default_factory=dict)  # where the weights came from


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return repr(value)


def load_pickle(path: Path) -> Imported:
    """Read an NVIDIA pickle into our names (``G_mapping/…``, ``G_synthesis/…``, D's own),
    every setting and shape checked; nothing is built or allocated beyond the file's arrays."""
    g, d, gs = read_pickle(path)
    cfg = config_from(gs, d, str(path))
    if config_from(g, d, str(path)) != cfg:
        raise StageError(f"{path}: G and Gs have different settings")
    ignored: list[str] = []
    arrays = {role: _variables(net, ignored, role) for role, net in
              (("G", g), ("D", d), ("Gs", gs))}
    shapes = nvidia_shapes(cfg)
    for role in ("G", "Gs", "D"):
        check_shapes(arrays[role], shapes["D" if role == "D" else "G"], f"{path} ({role})")
    record = {
        "source": path.name, "sha256": sha256_file(path), "format": "dnnlib-network-pickle",
        "ignored_variables": ignored,
        "static_kwargs": {role: {k: _jsonable(v) for k, v in
                                 (_state(net).get("static_kwargs") or {}).items()}
                          for role, net in (("G", g), ("D", d), ("Gs", gs),
                                            *((f"Gs/{k}", c) for k, c in
                                              _components(gs).items()))},
        "build_func_names": {role: _state(net).get("build_func_name")
                             for role, net in (("G", g), ("D", d), ("Gs", gs))},
    }
    return Imported(cfg, arrays["G"], arrays["D"], arrays["Gs"], str(path), record)
