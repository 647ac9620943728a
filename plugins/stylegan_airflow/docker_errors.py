"""What a Docker engine's refusal means for a profile, in one line the user can act on.

Classified by docker-py's exception types, the API endpoint that answered and Docker's own
error texts, never by words in the image's name (``stage-gpu`` is not a GPU error).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from docker.errors import APIError, ImageNotFound

if TYPE_CHECKING:
    from stylegan_airflow.profiles import Profile

# Image repositories that images/build.sh builds, by its target; the tag comes from TAG.
BUILT_BY_SCRIPT = {
    "stylegan-airflow/stage-cpu": "stage-cpu",
    "stylegan-airflow/stage-gpu": "stage-gpu",
    "stylegan-airflow/airflow": "airflow",
}

# Docker has no device driver for the "gpu" capability: no NVIDIA Container Toolkit.
NO_GPU_DRIVER = re.compile(r'could not select device driver ".*" with capabilities: .*\bgpu\b')
# The toolkit is there but its hook finds no usable driver or device.
GPU_HOOK_FAILED = re.compile(r"nvidia-container-cli: .*error")


def build_command(image: str) -> str | None:
    """The images/build.sh line that builds ``image``; None for images it does not build."""
    name, _, digest = image.partition("@")
    if digest:
        return None
    repo, tag = name, "latest"
    if name.rfind(":") > name.rfind("/"):  # a colon after the last slash starts the tag
        repo, tag = name.rsplit(":", 1)
    target = BUILT_BY_SCRIPT.get(repo)
    return None if target is None else f"TAG={tag} images/build.sh {target}"


def missing_image(profile: Profile) -> str:
    """The image is not on the profile's Docker host, and the profile does not pull it."""
    where = f"image {profile.image} is not on the Docker host {profile.docker_url}"
    command = build_command(profile.image or "")
    if command is not None:
        remote = "" if profile.docker_url.startswith("unix://") else (
            f" (with DOCKER_HOST={profile.docker_url})")
        how = f"build it there with `{command}`{remote}"
    elif profile.pull == "never":
        how = ("build or `docker load` it there, or set `pull: missing` in the profile to "
               "pull it from its registry")
    else:
        how = "build or `docker load` it there"
    return f"profile {profile.name!r}: {where}; {how}"


def pull_failed(profile: Profile, text: str) -> str:
    return (f"profile {profile.name!r} (pull: {profile.pull}): cannot pull image "
            f"{profile.image} onto the Docker host {profile.docker_url}: {text}")


def explanation(exc: APIError) -> str:
    """Docker's own message (the daemon's JSON ``message``), else the whole error."""
    return str(exc.explanation or exc).strip()


def _endpoint(exc: APIError) -> str:
    request = getattr(exc.response, "request", None)
    return urlparse(str(getattr(request, "url", "") or "")).path


def _pull(exc: APIError, profile: Profile) -> str | None:
    if re.search(r"/images/create$", _endpoint(exc)):
        return pull_failed(profile, explanation(exc))
    return None


def _missing(exc: APIError, profile: Profile) -> str | None:
    # docker-py raises ImageNotFound for a 404 whose text is Docker's "No such image"
    return missing_image(profile) if isinstance(exc, ImageNotFound) else None


def _no_gpu_driver(exc: APIError, profile: Profile) -> str | None:
    if not (profile.wants_gpu and NO_GPU_DRIVER.search(explanation(exc))):
        return None
    return (f"profile {profile.name!r} asks for GPUs but the Docker host {profile.docker_url} "
            f"has no GPU runtime (install the NVIDIA Container Toolkit there, or use a CPU "
            f"profile): {explanation(exc)}")


def _gpu_hook_failed(exc: APIError, profile: Profile) -> str | None:
    if not (profile.wants_gpu and GPU_HOOK_FAILED.search(explanation(exc))):
        return None
    return (f"profile {profile.name!r} asks for GPUs but the NVIDIA runtime on the Docker host "
            f"{profile.docker_url} cannot reach one (check the driver with nvidia-smi there, "
            f"or use a CPU profile): {explanation(exc)}")


# First match wins: a pull's "repository does not exist" is a failed pull, not a lost image.
RULES: tuple[Callable[[APIError, Profile], str | None], ...] = (
    _pull, _missing, _no_gpu_driver, _gpu_hook_failed)


def explain(exc: APIError, profile: Profile) -> str:
    """One line saying what went wrong for ``profile`` and what to do about it."""
    for rule in RULES:
        message = rule(exc, profile)
        if message is not None:
            return message
    return f"Docker refused the stage container: {explanation(exc)}"
