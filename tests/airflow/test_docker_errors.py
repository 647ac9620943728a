"""What the docker runner tells the user when Docker refuses: classified from errors built
the way docker-py builds them from the daemon's answers, and the profile's pull policy."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowException
from docker.errors import APIError, create_api_error_from_http_exception
from stylegan_airflow.docker_errors import build_command, explain
from stylegan_airflow.profiles import Profile
from stylegan_airflow.runners import DockerRunner

HOST = "unix://var/run/docker.sock"
NO_GPU_DRIVER = 'could not select device driver "" with capabilities: [[gpu]]'
NVIDIA_HOOK = ("OCI runtime create failed: container_linux.go:380: starting container process "
               "caused: process_linux.go:545: container init caused: Running hook #0:: error "
               "running hook: exit status 1, stdout: , stderr: nvidia-container-cli: "
               "initialization error: nvml error: driver not loaded: unknown")


def api_error(method: str, path: str, status: int, message: str) -> APIError:
    """The exception docker-py raises for this daemon answer (its own classification)."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"message": message}).encode()
    response.request = requests.Request(method, f"http+docker://localhost/v1.41{path}").prepare()
    response.url = str(response.request.url)
    try:
        create_api_error_from_http_exception(requests.HTTPError(response=response))
    except APIError as exc:
        return exc
    raise AssertionError("docker-py raised nothing")


def profile(image: str = "stylegan-airflow/stage-gpu:0.1.0", **kw: Any) -> Profile:
    return Profile(**{"name": "gpu", "runner": "docker", "image": image, "gpus": "all", **kw})


@pytest.mark.parametrize(("prof", "error", "says", "never_says"), [
    pytest.param(profile("stylegan-ops:gpu"),
                 api_error("POST", "/containers/create", 404, "No such image: stylegan-ops:gpu"),
                 ["profile 'gpu': image stylegan-ops:gpu is not on the Docker host " + HOST,
                  "set `pull: missing`"], "GPU", id="missing-image-named-gpu"),
    pytest.param(profile(),
                 api_error("GET", "/images/stylegan-airflow/stage-gpu:0.1.0/json", 404,
                           "no such image: stylegan-airflow/stage-gpu:0.1.0: No such image: "
                           "stylegan-airflow/stage-gpu:0.1.0"),
                 ["image stylegan-airflow/stage-gpu:0.1.0 is not on the Docker host " + HOST,
                  "build it there with `TAG=0.1.0 images/build.sh stage-gpu`"], "GPU",
                 id="missing-built-image"),
    pytest.param(profile(docker_url="tcp://gpu-host:2376"),
                 api_error("POST", "/containers/create", 404,
                           "No such image: stylegan-airflow/stage-gpu:0.1.0"),
                 ["not on the Docker host tcp://gpu-host:2376", "images/build.sh stage-gpu` "
                  "(with DOCKER_HOST=tcp://gpu-host:2376)"], "GPU", id="missing-on-remote-host"),
    pytest.param(profile(),
                 api_error("POST", "/containers/0123abcd/start", 500, NO_GPU_DRIVER),
                 [f"profile 'gpu' asks for GPUs but the Docker host {HOST} has no GPU runtime",
                  "NVIDIA Container Toolkit", NO_GPU_DRIVER], "not on the Docker host",
                 id="no-gpu-runtime"),
    pytest.param(profile(),
                 api_error("POST", "/containers/0123abcd/start", 500, NVIDIA_HOOK),
                 [f"the NVIDIA runtime on the Docker host {HOST} cannot reach one",
                  "driver not loaded"], "no GPU runtime", id="gpu-runtime-without-driver"),
    pytest.param(profile(pull="missing"),
                 api_error("POST", "/images/create?fromImage=stylegan-airflow%2Fstage-gpu"
                           "&tag=0.1.0", 500, 'Get "https://registry-1.docker.io/v2/": dial '
                           "tcp: lookup registry-1.docker.io: no such host"),
                 ["profile 'gpu' (pull: missing): cannot pull image "
                  "stylegan-airflow/stage-gpu:0.1.0 onto the Docker host " + HOST,
                  "no such host"], "GPU", id="registry-unreachable"),
    pytest.param(profile("stylegan-ops:gpu", pull="always"),
                 api_error("POST", "/images/create?fromImage=stylegan-ops&tag=gpu", 404,
                           "pull access denied for stylegan-ops, repository does not exist or "
                           "may require 'docker login'"),
                 ["cannot pull image stylegan-ops:gpu", "pull access denied"], "GPU",
                 id="pull-denied"),
    pytest.param(profile("stylegan-ops:gpu", gpus=0),
                 api_error("POST", "/containers/create", 400, "invalid reference format"),
                 ["Docker refused the stage container: invalid reference format"], "GPU",
                 id="anything-else"),
])
def test_docker_errors_say_what_is_wrong(prof: Profile, error: APIError, says: list[str],
                                         never_says: str) -> None:
    message = explain(error, prof)
    for text in says:
        assert text in message
    assert never_says not in message


@pytest.mark.parametrize(("image", "command"), [
    pytest.param("stylegan-airflow/stage-gpu:0.1.0", "TAG=0.1.0 images/build.sh stage-gpu",
                 id="stage-gpu"),
    pytest.param("stylegan-airflow/stage-cpu", "TAG=latest images/build.sh stage-cpu",
                 id="untagged-is-latest"),
    pytest.param("stylegan-airflow/airflow:0.2.0", "TAG=0.2.0 images/build.sh airflow",
                 id="airflow"),
    pytest.param("stylegan-ops:gpu", None, id="not-ours"),
    pytest.param("registry.example:5000/stylegan-airflow/stage-gpu:0.1.0", None,
                 id="from-a-registry"),
    pytest.param("stylegan-airflow/stage-gpu@sha256:" + "0" * 64, None, id="by-digest"),
])
def test_build_command_for_images_the_script_builds(image: str, command: str | None) -> None:
    assert build_command(image) == command


def test_pull_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="pull must be one of never, missing, always"):
        profile(pull="sometimes")
    assert profile().pull == "never"


class FakeEngine:
    """inspect_image and pull as docker-py's APIClient answers them, pulls recorded."""

    def __init__(self, has_image: bool, pull_events: list[dict[str, str]]) -> None:
        self.has_image = has_image
        self.pull_events = pull_events
        self.pulls: list[str] = []

    def inspect_image(self, image: str) -> dict[str, str]:
        if not self.has_image:  # an ImageNotFound, as docker-py classifies the 404
            raise api_error("GET", f"/images/{image}/json", 404, f"No such image: {image}")
        return {"Id": "sha256:" + "1" * 64}

    def pull(self, image: str, stream: bool, decode: bool) -> Iterator[dict[str, str]]:
        self.pulls.append(image)
        yield from self.pull_events


PULLED = [{"status": "Pulling from stylegan-ops"}, {"status": "Downloading", "id": "abc"},
          {"status": "Status: Downloaded newer image for stylegan-ops:gpu"}]


@pytest.mark.parametrize(("pull", "has_image", "events", "pulls", "error"), [
    pytest.param("never", True, PULLED, 0, None, id="never-present"),
    pytest.param("never", False, PULLED, 0, "is not on the Docker host", id="never-missing"),
    pytest.param("missing", True, PULLED, 0, None, id="missing-present"),
    pytest.param("missing", False, PULLED, 1, None, id="missing-pulls"),
    pytest.param("always", True, PULLED, 1, None, id="always-pulls"),
    pytest.param("missing", False, [{"error": "manifest for stylegan-ops:gpu not found"}], 1,
                 "cannot pull image stylegan-ops:gpu .*: manifest for", id="streamed-error"),
])
def test_image_is_pulled_only_as_the_profile_allows(pull: str, has_image: bool,
                                                   events: list[dict[str, str]], pulls: int,
                                                   error: str | None) -> None:
    engine = FakeEngine(has_image, events)
    runner = DockerRunner(profile("stylegan-ops:gpu", pull=pull))
    log = logging.getLogger("test")
    if error is None:
        runner.ensure_image(engine, log)
    else:
        with pytest.raises(AirflowException, match=error) as info:
            runner.ensure_image(engine, log)
        assert "GPU" not in str(info.value)
    assert engine.pulls == ["stylegan-ops:gpu"] * pulls
