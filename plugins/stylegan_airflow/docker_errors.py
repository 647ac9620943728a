"""What a Docker engine's refusal means for a profile, in one line the user can act on.

Classified by docker-py's exception types, the API endpoint that answered and Docker's own
error texts, never by words in the image's name (``stage-gpu`` is not a GPU error).
"""

from __future__ import annotations

import re
import socket
import ssl
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


# --- a Docker host that cannot be reached, or refuses our TLS ---------------------------

# OpenSSL reasons meaning the host looked at our client certificate and said no.
CLIENT_CERT_REFUSED = ("SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_UNKNOWN_CA",
                       "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                       "TLSV1_ALERT_ACCESS_DENIED")
PROBE_TIMEOUT = 10  # seconds: a second look at a host that already failed once


def unreachable(profile: Profile, exc: BaseException) -> str:
    """Why the profile's Docker host cannot be used, in one line naming it and the cause.

    The provider's hook logs the real cause and raises a generic "Failed to establish
    connection", so the connection is tried once more here, the same way, to learn it.
    """
    cause = _connect_error(profile)
    if cause is None:  # it answers now: all we have is what the hook said
        return (f"profile {profile.name!r}: cannot reach the Docker host "
                f"{profile.docker_url}: {_one_line(str(exc))}")
    return describe_connect_error(profile, cause, handling=exc)


def _connect_error(profile: Profile) -> BaseException | None:
    from airflow.providers.docker.hooks.docker import DockerHook
    from docker import APIClient

    tls = DockerHook.construct_tls_config(ca_cert=profile.tls_ca_cert,
                                          client_cert=profile.tls_client_cert,
                                          client_key=profile.tls_client_key)
    url = profile.docker_url
    if tls and url.startswith("tcp://"):
        url = "https://" + url.removeprefix("tcp://")  # as the hook does
    try:
        APIClient(base_url=url, tls=tls, timeout=PROBE_TIMEOUT).ping()
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is what we explain
        return exc
    return None


def describe_connect_error(profile: Profile, exc: BaseException,
                           handling: BaseException | None = None) -> str:
    """One line for a failed connection: the host, the TLS file at fault, OpenSSL's words.
    ``handling``: the exception being handled when ``exc`` was raised (not its cause)."""
    p, host = profile, profile.docker_url
    chain = _chain(exc, handling)
    tls_error = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls_error is None:
        return f"profile {p.name!r}: cannot reach the Docker host {host}: {_one_line(chain[-1])}"
    text, reason = _ssl_text(tls_error), str(getattr(tls_error, "reason", "") or "")
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        if "mismatch" in text:
            return (f"profile {p.name!r}: the Docker host {host} has a TLS certificate for "
                    f"another name (TLS error: {text}); use a docker_url with a name or "
                    f"address that certificate lists")
        return (f"profile {p.name!r}: the Docker host {host} failed TLS verification against "
                f"tls_ca_cert {p.tls_ca_cert} (TLS error: {text}); that file must hold the "
                f"CA that signed the host's server certificate")
    if reason == "KEY_VALUES_MISMATCH":
        return (f"profile {p.name!r}: cannot connect to the Docker host {host}: "
                f"tls_client_key {p.tls_client_key} is not the key of tls_client_cert "
                f"{p.tls_client_cert} (TLS error: {text})")
    refused = "refused the client certificate"
    if isinstance(tls_error, ssl.SSLEOFError):
        # TLS 1.3 checks the client certificate after the handshake and just hangs up;
        # a TLS 1.2 handshake draws the host's reason, as an alert
        alert = _tls12_alert(p)
        text, refused = (alert, refused) if alert else (
            text, "closed the connection, most likely refusing the client certificate")
    if reason in CLIENT_CERT_REFUSED or isinstance(tls_error, ssl.SSLEOFError):
        return (f"profile {p.name!r}: the Docker host {host} {refused} tls_client_cert "
                f"{p.tls_client_cert} (TLS error: {text}); it must be signed by the CA that "
                f"host's dockerd trusts (its --tlscacert)")
    return (f"profile {p.name!r}: TLS with the Docker host {host} failed (TLS error: {text}); "
            f"check tls_ca_cert {p.tls_ca_cert}, tls_client_cert {p.tls_client_cert} and "
            f"tls_client_key {p.tls_client_key}")


def _chain(exc: BaseException, stop: BaseException | None = None) -> list[BaseException]:
    """``exc`` and its causes, outermost first, up to ``stop`` (an error raised while
    another is handled has that one as its context). urllib3 keeps a cause in ``reason`` or
    as its argument, unchained."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current is not stop and all(current is not s for s in seen):
        seen.append(current)
        held = [getattr(current, "reason", None), *current.args]
        current = (current.__cause__ or current.__context__
                   or next((h for h in held if isinstance(h, BaseException)), None))
    return seen


def _ssl_text(exc: ssl.SSLError) -> str:
    """OpenSSL's words without the ``[SSL: REASON]`` prefix and ``(_ssl.c:N)`` suffix."""
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    text = re.sub(r"^\[[A-Z0-9_]+(: [A-Z0-9_]+)?\]\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text).strip()


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


def _tls12_alert(profile: Profile) -> str | None:
    """The alert a TLS 1.2 handshake with the profile's files draws from its host, if any."""
    url = urlparse(profile.docker_url)
    if not (url.hostname and profile.tls_ca_cert and profile.tls_client_cert):
        return None
    try:
        context = ssl.create_default_context(cafile=profile.tls_ca_cert)
        context.load_cert_chain(profile.tls_client_cert, profile.tls_client_key)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection((url.hostname, url.port or 2376),
                                      timeout=PROBE_TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname=url.hostname) as conn:
            conn.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            conn.recv(1)
    except ssl.SSLError as exc:
        return _ssl_text(exc) if "ALERT" in str(exc.reason or "") else None
    except OSError:
        return None
    return None
