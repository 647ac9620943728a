"""Resource profiles: a named runner, image, Docker host and limits, loaded from YAML."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FILE = Path(__file__).with_name("profiles.yaml")
ENV_VAR = "STYLEGAN_PROFILES"
VARIABLE = "stylegan_profiles_path"
# When the docker runner fetches the image from its registry. The default never reaches
# one: images/build.sh builds the stage images on the host and no registry holds them.
PULL_POLICIES = {
    "never": "use the image on the Docker host; a missing one fails at once",
    "missing": "pull it when the host lacks it",
    "always": "pull it before every run",
}
TLS_FIELDS = ("tls_ca_cert", "tls_client_cert", "tls_client_key")


@dataclass(frozen=True)
class Profile:
    """Where a stage runs and with what resources."""

    name: str
    runner: str = "local"  # a key of runners.RUNNERS
    image: str | None = None  # stage image for the docker runner
    docker_url: str = "unix://var/run/docker.sock"
    tls_ca_cert: str | None = None  # TLS files for a remote Docker host (None: plain)
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    cpus: float = 1.0
    mem_limit: str | None = None  # e.g. "8g"; None: no limit
    shm_size: str | None = None  # e.g. "1g"; None: Docker's 64m default
    gpus: int | str = 0  # 0: none, N: that many, "all": every GPU
    pull: str = "never"  # a key of PULL_POLICIES: whether the docker runner may pull the image
    pool: str = "default_pool"
    queue: str = "default"
    environment: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        from stylegan_airflow.runners import RUNNERS

        if self.runner not in RUNNERS:
            raise ValueError(f"profile {self.name!r}: unknown runner {self.runner!r}; "
                             f"known: {', '.join(sorted(RUNNERS))}")
        if self.runner == "docker" and not self.image:
            raise ValueError(f"profile {self.name!r}: the docker runner needs an image")
        if self.pull not in PULL_POLICIES:
            raise ValueError(f"profile {self.name!r}: pull must be one of "
                             f"{', '.join(PULL_POLICIES)}, got {self.pull!r}")
        if not (self.gpus == "all" or (isinstance(self.gpus, int) and self.gpus >= 0)):
            raise ValueError(f"profile {self.name!r}: gpus must be a count or 'all', "
                             f"got {self.gpus!r}")
        self._check_tls()

    def _check_tls(self) -> None:
        # The provider uses TLS only when all three files are given and silently talks plain
        # HTTP otherwise; a relative path would depend on each worker's directory.
        given = {k: v for k, v in self.tls_files().items() if v}
        if given and len(given) < len(TLS_FIELDS):
            missing = ", ".join(k for k in TLS_FIELDS if k not in given)
            raise ValueError(f"profile {self.name!r}: tls_ca_cert, tls_client_cert and "
                             f"tls_client_key go together; missing {missing}")
        for key, path in given.items():
            if not Path(path).is_absolute():
                raise ValueError(f"profile {self.name!r}: {key} must be an absolute path, "
                                 f"got {path!r}")
        if given and not self.docker_url.startswith(("tcp://", "https://")):
            raise ValueError(f"profile {self.name!r}: TLS files need a tcp:// docker_url, "
                             f"got {self.docker_url!r}")

    def tls_files(self) -> dict[str, str | None]:
        return {k: getattr(self, k) for k in TLS_FIELDS}

    def check_tls_files(self) -> None:
        """Each TLS file is there and readable, or ValueError naming it. Checked where the
        task runs, not at load: the DAG processor need not hold a worker's keys."""
        for key, path in self.tls_files().items():
            if path is None:
                continue
            if not Path(path).is_file():
                raise ValueError(f"profile {self.name!r}: {key} {path} does not exist "
                                 f"(on {socket.gethostname()})")
            if not os.access(path, os.R_OK):
                raise ValueError(f"profile {self.name!r}: {key} {path} is not readable by "
                                 f"uid {os.getuid()} (on {socket.gethostname()})")

    @property
    def wants_gpu(self) -> bool:
        return self.gpus == "all" or (isinstance(self.gpus, int) and self.gpus > 0)

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> Profile:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"profile {name!r}: unknown keys {', '.join(unknown)}")
        return cls(name=name, **d)


def profiles_path(override: str | None = None) -> Path:
    return Path(override or os.environ.get(ENV_VAR) or DEFAULT_FILE)


@cache
def _load(path: Path, mtime_ns: int) -> dict[str, Profile]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read profiles file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"profiles file {path} must map names to settings")
    return {str(name): Profile.from_dict(str(name), dict(body or {}))
            for name, body in raw.items()}


def load_profiles(path: str | None = None) -> dict[str, Profile]:
    """All profiles of the file in force (cached until the file changes)."""
    p = profiles_path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as exc:
        raise ValueError(f"profiles file not found: {p}") from exc
    return _load(p, mtime)


def get_profile(name: str, path: str | None = None) -> Profile:
    """The named profile; an unknown name raises ValueError naming it and the file."""
    profiles = load_profiles(path)
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(sorted(profiles))}; "
                         f"from {profiles_path(path)})")
    return profiles[name]
