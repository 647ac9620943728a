"""A second Docker engine on this machine that answers only over TLS: the "remote GPU host"
of a profile, for tests. Certificates come from ``openssl``; nothing leaves the machine.

    with TLSDockerHost() as host:                # dockerd --tlsverify on 127.0.0.1:PORT
        host.certs.ca, .client_cert, .client_key # openssl-made; .wrong_ca, .wrong_client_*
        seconds = host.load_image(STAGE_IMAGE)   # docker save | load; again: a no-op
        host.profile(STAGE_IMAGE)                # a profiles.yaml body for it (gpus: 0)
        host.url                                 # tcp://127.0.0.1:PORT, for host processes
        host.container_url, host.extra_hosts     # tcp://tls-docker-host:PORT + its mapping,
        host.gateway_url                         # or tcp://<docker0 gateway>:PORT: containers
        host.docker("ps", "-a")                  # its own CLI, over its unix socket

``make_certs(dir)`` alone makes the same set of files for any other server.

In tests, use the session fixtures ``tls_docker_engine`` (the engine) and ``tls_docker``
(the engine with the CPU stage image loaded) from tests/deploy/conftest.py.

The engine keeps out of the main engine's way: its own data root (under /var/lib, where
overlay2 works; on a loop-mounted ext4 image where loop devices allow, so teardown deletes
one file, not thousands), exec root, pid file, config file and containerd; a bridge of its
own (never ``--bridge=none``: dockerd then deletes the interface named docker0, the main
engine's), no iptables rules, no masquerading (so it never touches the main engine's chains; its
containers reach nothing outside, which stage containers do not need). It listens on
127.0.0.1:PORT and on the docker0 gateway address, so containers of the main engine (the
compose stack) reach it too, as ``tls-docker-host`` through ``extra_hosts``.

File modes: the certificate directory is world-traversable and certificates are 0644; the
client keys (the right one and the wrong one) are owned by uid 50000 (the Airflow and stage
images' user), group 0, mode 0640: readable by that user and by root, by nobody else. The
CA keys and the server key are root's alone (0600).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STAGE_IMAGE = "stylegan-airflow/stage-cpu:0.1.0"  # what images/build.sh stage-cpu makes
DATA_IMAGE_BYTES = 32 << 30  # room for the stage images; sparse, so free until written
IMAGE_USER = 50000  # uid of the user in the Airflow and stage images
HOSTNAME = "tls-docker-host"  # the name containers use; the server certificate carries it
EXTENSIONS = """\
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


def docker_ok() -> bool:
    """The main engine answers (the stage image is built there, then copied)."""
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def can_start() -> str | None:
    """Why a second engine cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "a second dockerd needs root"
    for tool in ("dockerd", "containerd", "openssl", "docker"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


def docker0_gateway() -> str | None:
    """The main engine's bridge address (containers' default gateway), e.g. 172.17.0.1."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True,
                         text=True, check=False).stdout
    m = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else None


def link_index(name: str) -> int | None:
    """The kernel's index of a network interface (a deleted and re-made one gets a new one)."""
    try:
        return int(Path(f"/sys/class/net/{name}/ifindex").read_text())
    except OSError:
        return None


@dataclass(frozen=True)
class Certs:
    """Where the PEM files are. ``wrong_*``: a client pair signed by an unrelated CA."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "key.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server-cert.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server-key.pem"

    @property
    def wrong_ca(self) -> Path:
        return self.dir / "wrong-ca.pem"

    @property
    def wrong_client_cert(self) -> Path:
        return self.dir / "wrong-cert.pem"

    @property
    def wrong_client_key(self) -> Path:
        return self.dir / "wrong-key.pem"


def _openssl(*args: str | Path, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _key_and_csr(cwd: Path, key: Path, subject: str) -> Path:
    csr = key.with_suffix(".csr")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", csr, "-subj", subject, cwd=cwd)
    return csr


def _ca(cwd: Path, cert: Path, key: Path, subject: str, ext: Path) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "7", "-subj", subject,
             "-config", ext, "-extensions", "ca", cwd=cwd)


def _sign(cwd: Path, csr: Path, cert: Path, ca: Path, ca_key: Path, ext: Path,
          section: str) -> None:
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "7", "-extfile", ext, "-extensions", section, cwd=cwd)
    csr.unlink()


def make_certs(directory: Path, ips: tuple[str, ...] = ("127.0.0.1",)) -> Certs:
    """A CA, a server certificate for ``ips``, HOSTNAME and localhost, a client pair it
    signed, and a client pair signed by an unrelated CA (for the refused case)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    c = Certs(directory)
    san = ",".join([*(f"IP:{ip}" for ip in ips), f"DNS:{HOSTNAME}", "DNS:localhost"])
    ext = directory / "extensions.cnf"
    ext.write_text(EXTENSIONS.format(san=san))
    ca_key, wrong_ca_key = directory / "ca-key.pem", directory / "wrong-ca-key.pem"
    _ca(directory, c.ca, ca_key, "/CN=stylegan test CA", ext)
    _ca(directory, c.wrong_ca, wrong_ca_key, "/CN=an unrelated CA", ext)
    pairs = [(c.server_cert, c.server_key, f"/CN={HOSTNAME}", c.ca, ca_key, "server"),
             (c.client_cert, c.client_key, "/CN=stylegan client", c.ca, ca_key, "client"),
             (c.wrong_client_cert, c.wrong_client_key, "/CN=stylegan client", c.wrong_ca,
              wrong_ca_key, "client")]
    for cert, key, subject, ca, signer, section in pairs:
        _sign(directory, _key_and_csr(directory, key, subject), cert, ca, signer, ext, section)
    for path in directory.iterdir():
        path.chmod(0o600 if path.name.endswith("key.pem") else 0o644)
    for key in (c.client_key, c.wrong_client_key):
        if os.geteuid() == 0:  # only root can give a file away; others keep theirs 0600
            os.chown(key, IMAGE_USER, 0)
            key.chmod(0o640)
    return c


def free_port(addresses: tuple[str, ...]) -> int:
    """A TCP port free on every one of ``addresses``."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = int(s.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


class TLSDockerHost:
    """A child ``dockerd --tlsverify`` with everything of its own under ``base``
    (/var/lib/...) and ``run`` (/run/...); stopped and removed on exit."""

    def __init__(self, base: Path | None = None, start_timeout: float = 60.0) -> None:
        suffix = secrets.token_hex(4)
        self.base = base or Path(f"/var/lib/stylegan-tls-docker-{suffix}")
        self.run = Path(f"/run/stylegan-tls-docker-{suffix}")  # sockets, netns, containerd
        self.gateway = docker0_gateway()
        self.docker0_before = link_index("docker0")  # the main engine's bridge, untouched
        self.addresses = ("127.0.0.1", *([self.gateway] if self.gateway else []))
        self.port = free_port(self.addresses)
        self.sock = self.run / "docker.sock"
        self.bridge = f"sgtls{suffix[:6]}"  # interface names: at most 15 characters
        # a subnet per engine, so two test sessions at once do not share one
        self.bridge_address = f"10.231.{int(suffix[:2], 16)}.1/24"
        self.log = self.base / "dockerd.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.certs: Certs | None = None
        self.load_seconds: dict[str, float] = {}  # image: how long copying it in took
        self.data_on_image = False  # data root on a loop-mounted ext4 image of its own

    @property
    def url(self) -> str:
        """For processes on this machine."""
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        """For containers of the main engine, by address."""
        if self.gateway is None:
            raise RuntimeError("no docker0 bridge: containers cannot reach this engine")
        return f"tcp://{self.gateway}:{self.port}"

    @property
    def container_url(self) -> str:
        """For containers of the main engine, by name (add ``extra_hosts``)."""
        return f"tcp://{HOSTNAME}:{self.port}"

    @property
    def extra_hosts(self) -> list[str]:
        """A compose ``extra_hosts`` entry (``docker run --add-host``) for container_url."""
        return [f"{HOSTNAME}:{self.gateway_url.split('//')[1].split(':')[0]}"]

    def profile(self, image: str, *, certs: Certs | None = None, url: str | None = None,
                ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                **settings: Any) -> dict[str, Any]:
        """A docker-runner profile (profiles.yaml body) for this engine; any file can be
        swapped for a wrong one."""
        c = certs or self._certs()
        return {"runner": "docker", "image": image, "docker_url": url or self.url,
                "tls_ca_cert": str(ca or c.ca), "tls_client_cert": str(cert or c.client_cert),
                "tls_client_key": str(key or c.client_key), "gpus": 0, **settings}

    def _certs(self) -> Certs:
        if self.certs is None:
            raise RuntimeError("the engine is not started")
        return self.certs

    def docker(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this engine's own unix socket (no TLS needed)."""
        return subprocess.run(["docker", "-H", f"unix://{self.sock}", *args], text=True,
                              capture_output=True, check=check, **kw)

    def start(self) -> TLSDockerHost:
        self.base.mkdir(parents=True)
        self.base.chmod(0o755)  # the certificates below are read by uid 50000
        self.run.mkdir(parents=True)
        self.certs = make_certs(self.base / "certs", self.addresses)
        self.data_on_image = self._mount_data_image()
        # A bridge of its own. NOT --bridge=none: dockerd then deletes the interface named
        # docker0 at start-up, which is the MAIN engine's bridge (its containers lose their
        # network). iptables stay off, so this engine never touches the main one's rules.
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", self.bridge_address, "dev", self.bridge],
                       check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        config = self.base / "daemon.json"
        config.write_text("{}\n")  # not /etc/docker/daemon.json: the main engine's settings
        c = self.certs
        cmd = ["dockerd", "--config-file", str(config),
               "--data-root", str(self.base / "data"), "--exec-root", str(self.run / "exec"),
               "--pidfile", str(self.run / "docker.pid"),
               "--containerd-namespace", "stylegan-tls",
               "--containerd-plugins-namespace", "stylegan-tls-plugins",
               "--cgroup-parent", "/stylegan-tls-docker",
               f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false",
               "--ip6tables=false",
               "-H", f"unix://{self.sock}",
               *(f"-H=tcp://{a}:{self.port}" for a in self.addresses),
               "--tlsverify", "--tlscacert", str(c.ca), "--tlscert", str(c.server_cert),
               "--tlskey", str(c.server_key)]
        with self.log.open("wb") as log:
            # its own session: the whole process group (dockerd and its containerd) can be
            # signalled at once, and a Ctrl-C of pytest does not reach it mid-teardown
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _mount_data_image(self) -> bool:
        """The data root on an ext4 image of its own where loop devices allow: a
        filesystem mounted with ``discard`` (as here) takes a minute to delete an image's
        thousands of files one by one, and one sparse file goes in a second. Falls back to
        a plain directory."""
        data, image = self.base / "data", self.base / "data.ext4"
        data.mkdir()
        with image.open("wb") as f:
            f.truncate(DATA_IMAGE_BYTES)  # sparse: takes only what the engine writes
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E",
                               "nodiscard", str(image)], capture_output=True, check=False)
        mounted = made.returncode == 0 and subprocess.run(
            ["mount", "-o", "loop", str(image), str(data)], capture_output=True,
            check=False).returncode == 0
        if not mounted:
            image.unlink()
        return mounted

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        c = self._certs()
        tls = ["--tlsverify", "--tlscacert", str(c.ca), "--tlscert", str(c.client_cert),
               "--tlskey", str(c.client_key)]
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            probe = subprocess.run(["docker", "-H", self.url, *tls, "version", "--format",
                                    "{{.Server.Version}}"], capture_output=True, check=False)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd on {self.url} did not answer within "
                                   f"{self.start_timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.3)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def load_image(self, image: str) -> float:
        """Copy ``image`` from the main engine into this one unless it holds that very image
        already; returns the seconds it took."""
        started = time.monotonic()
        ours = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                              capture_output=True, text=True, check=True).stdout.strip()
        theirs = self.docker("image", "inspect", "--format", "{{.Id}}", image, check=False)
        if theirs.returncode == 0 and theirs.stdout.strip() == ours:
            return time.monotonic() - started
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", f"unix://{self.sock}", "load", "-q"],
                              stdin=save.stdout, capture_output=True, text=True, check=False)
        assert save.stdout is not None
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"cannot copy {image} into {self.url}: {load.stderr.strip()}")
        self.load_seconds[image] = time.monotonic() - started
        return self.load_seconds[image]

    def stop(self) -> None:
        """Remove its containers, stop the engine and every process it left, and delete its
        directories."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
            os.killpg(self.proc.pid, signal.SIGTERM)  # dockerd stops its containerd itself
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.proc is not None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in its group
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._unmount()
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        for path in (self.base, self.run):
            shutil.rmtree(path, ignore_errors=True)

    def leftover_pids(self) -> list[int]:
        """Processes (a containerd, its shims) that name this engine's directories."""
        marks = (str(self.base).encode(), str(self.run).encode())
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in cmdline for m in marks):
                found.append(int(entry.name))
        return found

    def _unmount(self) -> None:
        """Mounts left under its directories (overlay layers, netns) would block the rm."""
        marks = (f"{self.base}/", f"{self.run}/")
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines()]
        for point in sorted((m for m in mounts if m.startswith(marks)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def __enter__(self) -> TLSDockerHost:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
