"""Network presets in one table, and the resolved architecture config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from stylegan_ops.errors import StageError


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of G and D; config-f is NVIDIA's, weight for weight."""

    resolution: int = 256  # output size; a power of two >= 4
    num_channels: int = 3  # image channels
    z_dim: int = 512  # latent z
    w_dim: int = 512  # intermediate latent w (dlatent)
    mapping_layers: int = 8  # dense layers in the mapping network
    mapping_lrmul: float = 0.01  # learning-rate multiplier of the mapping network
    fmap_base: int = 16384  # channels at level l: min(fmap_base / 2^l, fmap_max)
    fmap_max: int = 512
    mbstd_group: int = 4  # minibatch-stddev group size (0: none)
    mbstd_features: int = 1

    def __post_init__(self) -> None:
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise StageError(f"resolution must be a power of two >= 4, got {self.resolution}")
        for name in ("z_dim", "w_dim", "mapping_layers", "fmap_base", "fmap_max"):
            if getattr(self, name) < 1:
                raise StageError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def log2(self) -> int:
        return self.resolution.bit_length() - 1

    def channels(self, level: int) -> int:
        """Feature maps at level ``level`` (1 = 4x4 block's stage in NVIDIA's counting)."""
        return min(int(self.fmap_base / (2.0 ** level)), self.fmap_max)

    @property
    def num_ws(self) -> int:
        """w vectors the synthesis network takes: one per conv layer and a last ToRGB."""
        return self.log2 * 2 - 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise StageError(f"unknown network config keys: {', '.join(unknown)}")
        return cls(**d)


PRESETS: dict[str, NetworkConfig] = {
    "config-f": NetworkConfig(fmap_base=16384, fmap_max=512),
    "config-e": NetworkConfig(fmap_base=8192, fmap_max=512),
    # CPU tests and the demo: 32 px, few channels, a short mapping network
    "small": NetworkConfig(resolution=32, z_dim=64, w_dim=64, mapping_layers=2,
                           fmap_base=512, fmap_max=64),
}


def preset(name: str, **overrides: Any) -> NetworkConfig:
    if name not in PRESETS:
        raise StageError(f"unknown config {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
