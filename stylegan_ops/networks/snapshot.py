"""Network snapshots: a directory with ``config.json`` and ``.npz`` weights keyed by
NVIDIA's variable names (never pickles), plus the training state needed to resume."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, dump_json, read_json
from stylegan_ops.networks.presets import NetworkConfig

FORMAT = "stylegan-ops-snapshot/1"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz np.load reads, byte-identical for identical arrays: fixed member times and
    order, so the same weights make the same store objects."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arrays[name]),
                                          allow_pickle=False)
    path.write_bytes(buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read weights {path}: {exc}") from exc


def check_shapes(arrays: dict[str, np.ndarray], want: dict[str, tuple[int, ...]],
                 what: str) -> None:
    """Names and shapes of ``arrays`` exactly ``want``'s, else a StageError naming them."""
    missing = sorted(set(want) - set(arrays))
    extra = sorted(set(arrays) - set(want))
    if missing or extra:
        raise StageError(f"{what}: weights do not match the network (missing: "
                         f"{missing[:3]}{'…' if len(missing) > 3 else ''}, unexpected: "
                         f"{extra[:3]}{'…' if len(extra) > 3 else ''})")
    for name, shape in want.items():
        if tuple(arrays[name].shape) != tuple(shape):
            raise StageError(f"{what}: {name} has shape {tuple(arrays[name].shape)}, the "
                             f"network expects {tuple(shape)}")


def assign(params: dict[str, Any], arrays: dict[str, np.ndarray], what: str) -> None:
    """Copy arrays into variables by name, checking that names and shapes match exactly."""
    check_shapes(arrays, {name: tuple(var.shape) for name, var in params.items()}, what)
    for name, var in params.items():
        var.assign(arrays[name].astype(np.float32))


@dataclass
class Snapshot:
    """What a snapshot directory holds, in memory."""

    config: NetworkConfig
    G: dict[str, np.ndarray]
    D: dict[str, np.ndarray]
    Gs: dict[str, np.ndarray]
    state: dict[str, Any]  # kimg, augment p, pl mean, optimizer step counts, …
    optimizer: dict[str, np.ndarray]  # optimizer slots keyed "<opt>/<slot>/<var name>"

    def save(self, out: Path, meta: dict[str, Any] | None = None) -> None:
        with atomic_dir(out) as tmp:
            save_npz(tmp / "G.npz", self.G)
            save_npz(tmp / "D.npz", self.D)
            save_npz(tmp / "Gs.npz", self.Gs)
            if self.optimizer:
                save_npz(tmp / "optimizer.npz", self.optimizer)
            (tmp / "state.json").write_bytes(dump_json(self.state))
            (tmp / "config.json").write_bytes(dump_json({
                "format": FORMAT, "network": self.config.to_dict(), **(meta or {})}))

    @classmethod
    def load(cls, path: Path, need_training_state: bool = False) -> Snapshot:
        if not (path / "config.json").is_file():
            raise StageError(f"not a network snapshot (no config.json): {path}")
        cfg = read_json(path / "config.json")
        if cfg.get("format") != FORMAT:
            raise StageError(f"{path}: unknown snapshot format {cfg.get('format')!r}")
        network = NetworkConfig.from_dict(cfg["network"])
        gs = load_npz(path / "Gs.npz")
        g = load_npz(path / "G.npz") if (path / "G.npz").exists() else {}
        d = load_npz(path / "D.npz") if (path / "D.npz").exists() else {}
        if need_training_state and not (g and d):
            raise StageError(f"{path} holds no G/D weights to resume training from")
        opt = load_npz(path / "optimizer.npz") if (path / "optimizer.npz").exists() else {}
        state = json.loads((path / "state.json").read_text()) \
            if (path / "state.json").exists() else {}
        return cls(network, g, d, gs, state, opt)
