"""``stylegan-ops``: one sub-command per stage; each prints its result as the last stdout line.

Every failure ends as one ``stylegan-ops: error:`` line on stderr: a bad argument (click's
own parse errors included), a StageError, or an OSError from the user's paths exit 2; an
unexpected exception is a bug and exits 1 with one ``internal error`` line, its traceback
in a crash file (printed instead with ``--debug`` or STYLEGAN_DEBUG=1).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NoReturn

import click

from stylegan_ops import __version__
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import describe_os_error, loads_strict, output_problem, show_path, to_json
from stylegan_ops.training import DEVICE_RE, MAX_TRAIN_SEED

PathArg = click.Path(path_type=Path)
ExistingPath = click.Path(path_type=Path, exists=True)
DEBUG_ENV = "STYLEGAN_DEBUG"
SEED = click.IntRange(0, 2**32 - 1)  # numpy.random.RandomState takes exactly these


class FiniteFloat(click.ParamType):  # type: ignore[type-arg]
    """A float that is finite (never nan, inf, -inf) and within optional bounds."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None,
                 min_open: bool = False, max_open: bool = False) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def _bounds(self) -> str:
        lo = f"{'>' if self.min_open else '>='} {self.min:g}" if self.min is not None else ""
        hi = f"{'<' if self.max_open else '<='} {self.max:g}" if self.max is not None else ""
        return " and ".join(b for b in (lo, hi) if b)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low = self.min is not None and (number <= self.min if self.min_open
                                        else number < self.min)
        high = self.max is not None and (number >= self.max if self.max_open
                                         else number > self.max)
        if low or high:
            self.fail(f"{value!r} must be {self._bounds()}", param, ctx)
        return number


class OutPath(click.ParamType):  # type: ignore[type-arg]
    """An output the command can create: a ``file`` or ``dir`` (see fsutil.output_problem).

    Checked before the stage starts, so a bad --out costs nothing and leaves nothing."""

    name = "path"

    def __init__(self, kind: Literal["file", "dir"]) -> None:
        self.kind: Literal["file", "dir"] = kind

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Path:
        problem = output_problem(Path(value) if value != "" else value, self.kind)
        if problem:
            self.fail(problem, param, ctx)
        return Path(value)


OutFile, OutDir = OutPath("file"), OutPath("dir")


class DeviceList(click.ParamType):  # type: ignore[type-arg]
    """Comma-separated TF device names, e.g. ``/gpu:0,/gpu:1``: non-empty, no repeats."""

    name = "devices"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        devices = tuple(d.strip() for d in str(value).split(","))
        bad = [d for d in devices if not DEVICE_RE.match(d)]
        if bad:
            self.fail(f"{value!r}: {bad[0]!r} is not a TF device like /gpu:0 or /cpu:1",
                      param, ctx)
        if len(set(devices)) != len(devices):
            self.fail(f"{value!r} names a device twice", param, ctx)
        return devices


class ShardType(click.ParamType):  # type: ignore[type-arg]
    """``i/N``: the i-th (from 0) of N shards."""

    name = "i/N"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            index, count = (int(part) for part in str(value).split("/"))
        except ValueError:
            self.fail(f"{value!r} is not of the form i/N", param, ctx)
        if count < 1 or not 0 <= index < count:
            self.fail(f"{value!r}: need 0 <= i < N", param, ctx)
        return index, count


class _Emit:
    """Wraps a plain dict so ``emit`` can print it like a stage result."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def to_dict(self) -> Any:
        return self.data


def emit(result: Any) -> None:
    """Print the stage result as one JSON line: the task's XCom in Airflow. A NaN or an
    Infinity in it is refused (StageError naming the field): JSON has neither."""
    click.echo(to_json(result.to_dict(), sort_keys=True))


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).replace("\r", " ").strip()


def _fail(message: str) -> NoReturn:
    click.echo(f"stylegan-ops: error: {_one_line(message)}", err=True)
    sys.exit(2)


def _command_words(ctx: click.Context | None) -> str:
    """``store checkout`` for the context of that command (the program name left out)."""
    words = []
    while ctx is not None and ctx.parent is not None:
        words.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(words))


def _debug(ctx: click.Context | None) -> bool:
    root = ctx.find_root() if ctx is not None else None
    flag = bool(root.params.get("debug")) if root is not None else False
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _internal_error(exc: Exception, ctx: click.Context | None) -> NoReturn:
    """A bug: one line naming it and where its traceback went, exit 1 (not 2: the user's
    input was fine, or should have been refused as such)."""
    text = "".join(traceback.format_exception(exc))
    try:
        fd, name = tempfile.mkstemp(prefix="stylegan-ops-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"stylegan-ops {__version__} {_command_words(ctx)}\n{text}")
        where = f"traceback in {name}"
    except OSError:
        where = "no crash file could be written"
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    click.echo(f"stylegan-ops: internal error: {type(exc).__name__}: "
               f"{_one_line(str(exc))[:300]}{at} (a bug; {where}; --debug prints it)",
               err=True)
    sys.exit(1)


@contextlib.contextmanager
def _reported(ctx: click.Context | None) -> Iterator[None]:
    """The one place an exception becomes the process's last word."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort):
        raise
    except click.ClickException as exc:  # parse errors: bad option, value, missing argument
        sub = getattr(exc, "ctx", None) or ctx
        words = _command_words(sub)
        hint = f" (see stylegan-ops {words + ' ' if words else ''}--help)"
        _fail(f"{words + ': ' if words else ''}{exc.format_message()}{hint}")
    except StageError as exc:
        _fail(str(exc))
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # stdout closed early (`| head`): click quiets it
            raise
        out = ctx.params.get("out") if ctx is not None else None
        doing = f"{_command_words(ctx)} --out {show_path(out)}" if (
            out is not None and exc.filename is None) else ""
        _fail(describe_os_error(exc, doing))
    except Exception as exc:
        if _debug(ctx):
            raise
        _internal_error(exc, ctx)


def stage(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command's body so that any failure ends as one line (see _reported)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _reported(click.get_current_context(silent=True)):
            return fn(*args, **kwargs)
    return wrapper


class _Main(click.Group):
    """The root group: click's own usage errors, and anything a command lets through, end
    as one ``stylegan-ops: error:`` line too, never click's multi-line Usage block."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with _reported(None):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _reported(ctx):
            return super().invoke(ctx)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr (default: info).")
@click.option("--debug", is_flag=True,
              help="Let an internal error raise with its traceback (default: one line and "
                   "a crash file; also $STYLEGAN_DEBUG=1).")
def main(verbose: bool, debug: bool) -> None:
    """StyleGAN2 pipeline stages.

    \b
    Examples:
      stylegan-ops make-sample-lmdb --out sample-lmdb --count 200
      stylegan-ops prepare lsun sample-lmdb --out data/cats --resolution 64 --max-images 100
      stylegan-ops inspect data/cats
      stylegan-ops download http://dl.yf.io/lsun/objects/cat.zip --out cat.zip \\
          --md5-url http://dl.yf.io/lsun/objects/cat.zip.md5
      stylegan-ops unzip cat.zip --out lsun
      stylegan-ops prepare lsun lsun/cat --out data/lsun-cat-256 --max-images 1000 --workers 2
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("url")
@click.option("--out", type=OutFile, required=True, help="File to write (required).")
@click.option("--md5", help="Expected md5 as hex (default: none).")
@click.option("--md5-url", help="URL of the published .md5 file (default: none).")
@click.option("--sha256", help="Expected sha256 as hex (default: none).")
@click.option("--retries", type=click.IntRange(min=0), default=8, show_default=True,
              help="Failed attempts in a row (none keeping new bytes) before giving up.")
@click.option("--timeout", type=FiniteFloat(min=0.001), default=30.0, show_default=True,
              help="Seconds without data before a connection counts as stalled.")
@click.option("--backoff", type=FiniteFloat(min=0.0), default=1.0, show_default=True,
              help="First retry delay in seconds; doubles per retry, at most 60.")
@click.option("--deadline", type=FiniteFloat(min=0.0, min_open=True), default=None,
              help="Seconds for the whole download, waits and retries included; the part "
                   "is kept for a later resume (default: no limit).")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None,
              help="Refuse a file larger than this; the only cap on a body of undeclared "
                   "length (default: none, the free disk space).")
@click.option("--lock-wait", type=FiniteFloat(min=0.0), default=3600.0, show_default=True,
              help="Seconds to wait for another download of the same --out (an overlapping "
                   "retry) to finish; its file is then verified and reused.")
@stage
def download(url: str, out: Path, md5: str | None, md5_url: str | None, sha256: str | None,
             retries: int, timeout: float, backoff: float, deadline: float | None,
             max_bytes: int | None, lock_wait: float) -> None:
    """Download URL to --out, resuming FILE.part and verifying the checksum."""
    from stylegan_ops.data import download as stage_mod

    emit(stage_mod.run(stage_mod.DownloadConfig(
        url, out, md5, md5_url, sha256, retries=retries, timeout=timeout, backoff=backoff,
        deadline=deadline, max_bytes=max_bytes, lock_wait=lock_wait)))


@main.command()
@click.argument("archive", type=PathArg)
@click.option("--out", type=OutDir, required=True, help="Directory to create (required).")
@stage
def unzip(archive: Path, out: Path) -> None:
    """Extract ARCHIVE into --out, streaming, refusing entries that escape it."""
    from stylegan_ops.data import unzip as stage_mod

    emit(stage_mod.run(stage_mod.UnzipConfig(archive, out)))


@main.group()
def prepare() -> None:
    """Extract NVIDIA-layout TFRecords (every level r02..rNN, dataset.json, reals.png)."""


def _prepare_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--out", type=OutDir, required=True,
                     help="Dataset directory to create; its name prefixes the files."),
        click.option("--resolution", type=int, default=256, show_default=True,
                     help="Output size in pixels, a power of two in 4..8192."),
        click.option("--max-images", type=click.IntRange(min=1), default=None,
                     help="Stop after this many decodable images (default: all)."),
        click.option("--workers", type=click.IntRange(min=1, max=256), default=1,
                     show_default=True,
                     help="Local processes (at most 256); the output bytes do not depend "
                          "on it."),
        click.option("--shard", type=ShardType(), default=None,
                     help="Write only shard i of N (for `prepare merge`; default: all)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@prepare.command("lsun")
@click.argument("lmdb_dir", type=PathArg)
@_prepare_options
@stage
def prepare_lsun(lmdb_dir: Path, out: Path, resolution: int, max_images: int | None,
                 workers: int, shard: tuple[int, int] | None) -> None:
    """From an LSUN LMDB directory, in key order (create_lsun semantics)."""
    from stylegan_ops.data import prepare as stage_mod

    emit(stage_mod.run(stage_mod.PrepareConfig("lsun", lmdb_dir, out, resolution, max_images,
                                               workers, None, shard)))


@prepare.command("images")
@click.argument("folder", type=PathArg)
@_prepare_options
@click.option("--labels", type=ExistingPath, default=None,
              help=".npy of float32 [N, label_dim], a row per file in path order (default: none).")
@stage
def prepare_images(folder: Path, out: Path, resolution: int, max_images: int | None,
                   workers: int, shard: tuple[int, int] | None, labels: Path | None) -> None:
    """From a folder of image files of any size, in path order."""
    from stylegan_ops.data import prepare as stage_mod

    emit(stage_mod.run(stage_mod.PrepareConfig("images", folder, out, resolution, max_images,
                                               workers, labels, shard)))


@prepare.command("merge")
@click.argument("shards", type=ExistingPath, nargs=-1, required=True)
@click.option("--out", type=OutDir, required=True, help="Dataset directory to create.")
@stage
def prepare_merge(shards: tuple[Path, ...], out: Path) -> None:
    """Merge the shard directories of one `prepare --shard i/N` request into a dataset."""
    from stylegan_ops.data import prepare as stage_mod

    emit(stage_mod.merge(list(shards), out))


@main.command("make-sample-lmdb")
@click.option("--out", type=OutDir, required=True, help="LMDB directory to create.")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Decodable images to generate.")
@click.option("--bad", type=click.IntRange(min=0), default=None,
              help="Corrupt or empty records added (default: 2%, at least 2).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed.")
@click.option("--workers", type=click.IntRange(min=1, max=256),
              default=min(os.cpu_count() or 1, 256),
              help="Processes drawing images (default: all cores, at most 256).")
@click.option("--palette", default="default", show_default=True,
              help="Fur and eye colours: default, or alt (no fur colour in common).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="Index of the first image; samples of one seed over disjoint "
                   "[offset, offset+count) ranges share no image.")
@stage
def make_sample_lmdb(out: Path, count: int, bad: int | None, seed: int, workers: int,
                     palette: str, offset: int) -> None:
    """Generate the embedded sample: an LSUN-format LMDB of cartoon cats."""
    from stylegan_ops.data import sample as stage_mod

    emit(stage_mod.run(stage_mod.SampleConfig(out, count, bad, seed, workers, palette,
                                              offset)))


@main.command()
@stage
def info() -> None:
    """Versions of this tool and its runtime (a no-op stage: checks an image or worker)."""
    import importlib.util
    import platform

    emit(_Emit({"stylegan_ops": __version__, "python": platform.python_version(),
                "tensorflow_installed": importlib.util.find_spec("tensorflow") is not None}))


@main.command()
@click.argument("path", type=PathArg)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Check the pyramid of the first N images only (default: all).")
@stage
def inspect(path: Path, limit: int | None) -> None:
    """Check an NVIDIA-layout TFRecord directory; exit 2 when its layout is broken."""
    from stylegan_ops.data import inspect as stage_mod

    report = stage_mod.run(stage_mod.InspectConfig(path, limit))
    emit(report)
    if report.problems:
        more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise StageError(f"{path}: broken dataset: {report.problems[0]}{more}")


# --- StyleGAN2 -------------------------------------------------------------------------

@main.command()
@click.option("--data", type=PathArg, required=True, help="NVIDIA-layout dataset directory.")
@click.option("--out", type=OutDir, required=True,
              help="Run directory (created; an existing one is resumed with --resume auto).")
@click.option("--config", default="config-f", show_default=True,
              help="Network preset: config-f, config-e or small.")
@click.option("--total-kimg", type=FiniteFloat(min=0, min_open=True), default=10.0,
              show_default=True, help="Thousands of real images to show D (> 0).")
@click.option("--batch", type=click.IntRange(min=2), default=32, show_default=True,
              help="Minibatch size (>= 2, divisible by the devices).")
@click.option("--gamma", type=FiniteFloat(min=0), default=None,
              help="R1 weight (>= 0; default: the preset's — config-f/e 10, small "
                   "ADA's auto rule 0.0002·res²/batch).")
@click.option("--mirror", is_flag=True, help="x-flip the reals (default: off).")
@click.option("--resume", default=None,
              help="Snapshot dir to continue, or 'auto' for the newest in --out (default: none).")
@click.option("--init", "init", type=PathArg, default=None,
              help="Fine-tune: start G, D and Gs from this snapshot dir or NVIDIA .pkl "
                   "(kimg 0, fresh optimizer; its architecture must be --config's).")
@click.option("--freeze-d", type=click.IntRange(min=0), default=0, show_default=True,
              help="D blocks from the highest resolution kept fixed (FreezeD).")
@click.option("--ema-kimg", type=FiniteFloat(min=0), default=10.0, show_default=True,
              help="Half-life of the G average, in kimg (>= 0).")
@click.option("--ema-rampup", type=FiniteFloat(min=0), default=None,
              help="Cap the EMA half-life at this × the images shown (0: off; default: "
                   "the preset's — small 0.05, config-f/e off).")
@click.option("--pl-weight", type=FiniteFloat(min=0), default=None,
              help="Path-length regularisation weight (0: none; default: the preset's — "
                   "config-f/e 2, small 0).")
@click.option("--style-mixing", type=FiniteFloat(min=0, max=1), default=None,
              help="Style-mixing probability in [0, 1] (default: the preset's — config-f/e "
                   "0.9, small 0).")
@click.option("--aug", type=click.Choice(["none", "ada", "fixed"]), default="none",
              show_default=True,
              help="Augment what D sees: adaptive p (ada), a constant --p (fixed), or none.")
@click.option("--augpipe", type=click.Choice(["blit", "geom", "color", "bgc", "bgcf", "bgcfn",
                                              "bgcfnc"]),
              default="bgc", show_default=True, help="ADA's transform groups.")
@click.option("--target", "ada_target", type=FiniteFloat(min=0, min_open=True, max=1),
              default=0.6, show_default=True,
              help="ADA's target for the sign of D's outputs on reals, in (0, 1].")
@click.option("--ada-kimg", type=FiniteFloat(min=0, min_open=True), default=500.0,
              show_default=True,
              help="ADA's speed: kimg in which p can move by 1 (ADA's 500; a short run on "
                   "a small set wants a few, e.g. 10).")
@click.option("--p", "aug_p", type=FiniteFloat(min=0, max=1), default=0.0,
              show_default=True,
              help="Augment probability: --aug fixed's constant, --aug ada's start.")
@click.option("--metrics", "metric_names", default="",
              help="Evaluate every snapshot: e.g. swd,fid50k_full (default: none); "
                   "appended to <out>/metric-<name>.jsonl with its kimg.")
@click.option("--metrics-images", type=click.IntRange(min=2), default=None,
              help="Cap the images per metric during training (default: each metric's).")
@click.option("--keep-best", default=None,
              help="One of --metrics: keep its best snapshot as <out>/network-best.")
@click.option("--reference-data", type=PathArg, default=None,
              help="The metrics' reals: another dataset dir, e.g. the full set a subset "
                   "was cut from (default: --data).")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="GPUs to use.")
@click.option("--devices", type=DeviceList(), default=None,
              help="Explicit TF devices, e.g. /gpu:0,/gpu:2 or /cpu:0,/cpu:1 (default: --gpus).")
@click.option("--mixed-precision", is_flag=True,
              help="float16 synthesis and D with dynamic loss scaling (default: float32).")
@click.option("--xla", is_flag=True,
              help="Compile the training steps with XLA (jit_compile; one device only; "
                   "default: off).")
@click.option("--tick-kimg", type=FiniteFloat(min=0, min_open=True), default=1.0,
              show_default=True, help="kimg between stats lines (> 0).")
@click.option("--snapshot-ticks", type=click.IntRange(min=1), default=4, show_default=True,
              help="Ticks between snapshots (>= 1).")
@click.option("--seed", type=click.IntRange(0, MAX_TRAIN_SEED), default=0, show_default=True,
              help="Random seed.")
@stage
def train(data: Path, out: Path, config: str, total_kimg: float, batch: int,
          gamma: float | None, mirror: bool, resume: str | None, init: Path | None,
          freeze_d: int, ema_kimg: float, ema_rampup: float | None, pl_weight: float | None,
          style_mixing: float | None, aug: str, augpipe: str, ada_target: float,
          ada_kimg: float, aug_p: float, metric_names: str, metrics_images: int | None,
          keep_best: str | None, reference_data: Path | None, gpus: int,
          devices: tuple[str, ...] | None, mixed_precision: bool, xla: bool,
          tick_kimg: float, snapshot_ticks: int, seed: int) -> None:
    """Train StyleGAN2 (TF2) on a dataset; --resume auto continues after a crash,
    --init fine-tunes a pretrained network."""
    from stylegan_ops.training import loop

    metrics: tuple[str, ...] = ()
    if metric_names.strip():
        from stylegan_ops.metrics.evaluate import parse_metrics

        metrics = parse_metrics(metric_names)
    emit(loop.run(loop.TrainConfig(
        data, out, config, total_kimg, batch, gamma, mirror, resume, aug, ada_target,
        gpus=gpus, tick_kimg=tick_kimg, devices=devices, mixed_precision=mixed_precision,
        xla=xla, snapshot_ticks=snapshot_ticks, seed=seed, ema_kimg=ema_kimg, ema_rampup=ema_rampup,
        init=str(init) if init else None, freeze_d=freeze_d, augpipe=augpipe, aug_p=aug_p,
        ada_kimg=ada_kimg, pl_weight=pl_weight, style_mixing=style_mixing,
        metrics=metrics, metrics_images=metrics_images, keep_best=keep_best,
        reference_data=reference_data)))


@main.command()
@click.option("--network", type=PathArg, required=True,
              help="Snapshot directory or NVIDIA .pkl (required).")
@click.option("--seeds", required=True, help="Seeds: a-b (inclusive) or a,b,c.")
@click.option("--truncation-psi", type=FiniteFloat(), default=0.5, show_default=True,
              help="Truncation ψ (1: none, 0: the mean image; any finite number).")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const",
              show_default=True, help="const: noise from the seed, as NVIDIA's script.")
@click.option("--xla", is_flag=True,
              help="One XLA-compiled map + synthesis: the same images to float rounding, "
                   "not to the byte (default: off, eager, NVIDIA's exact bytes).")
@click.option("--out", type=OutDir, required=True, help="Directory to create.")
@stage
def generate(network: Path, seeds: str, truncation_psi: float, noise_mode: str, xla: bool,
             out: Path) -> None:
    """Generate seed<NNNN>.png for each seed."""
    from stylegan_ops import generate as stage_mod

    emit(stage_mod.run(stage_mod.GenerateConfig(network, stage_mod.parse_seeds(seeds), out,
                                                truncation_psi, noise_mode, xla)))


@main.command("style-mix")
@click.option("--network", type=PathArg, required=True, help="Snapshot directory or .pkl.")
@click.option("--row-seeds", required=True, help="Seeds of the rows.")
@click.option("--col-seeds", required=True, help="Seeds of the columns.")
@click.option("--col-styles", default="0-6", show_default=True,
              help="Layers whose w comes from the column.")
@click.option("--truncation-psi", type=FiniteFloat(), default=0.5, show_default=True,
              help="ψ (any finite number).")
@click.option("--out", type=OutDir, required=True, help="Directory for grid.png.")
@stage
def style_mix(network: Path, row_seeds: str, col_seeds: str, col_styles: str,
              truncation_psi: float, out: Path) -> None:
    """Style-mixing grid: row seeds × column seeds."""
    from stylegan_ops import generate as stage_mod

    if not network.exists():
        raise StageError(f"no such network: {network}")
    parse = stage_mod.parse_seeds
    emit(stage_mod.style_mix(network, parse(row_seeds), parse(col_seeds), parse(col_styles),
                             truncation_psi, out))


@main.command()
@click.option("--network", type=PathArg, required=True,
              help="Snapshot directory or NVIDIA .pkl (required).")
@click.option("--target", type=PathArg, required=True,
              help="Image to project, or a folder of images (searched recursively; each "
                   "gets its own sub-directory of --out).")
@click.option("--steps", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Optimisation steps per target.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the mean-w samples, noise maps and w noise.")
@click.option("--save-frames", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write frames.png, the image at this many evenly spaced steps (0: none).")
@click.option("--w-avg-samples", type=click.IntRange(min=2), default=10_000,
              show_default=True, help="Mapped samples for the starting (mean) w.")
@click.option("--out", type=OutDir, required=True, help="Directory to create (required).")
@stage
def project(network: Path, target: Path, steps: int, seed: int, save_frames: int,
            w_avg_samples: int, out: Path) -> None:
    """Find the w and noise maps whose image matches a real one (StyleGAN2's projector:
    LPIPS distance from the weight cache, see fetch-weights).

    \b
    Examples:
      stylegan-ops project --network net.pkl --target cat.jpg --out proj
      stylegan-ops project --network run/network-final --target cats/ --steps 500 \\
          --save-frames 10 --out proj-cats"""
    from stylegan_ops import project as stage_mod

    emit(stage_mod.run(stage_mod.ProjectConfig(network, target, out, steps, seed, save_frames,
                                               w_avg_samples)))


@main.command()
@click.option("--network", type=PathArg, required=True, help="Snapshot directory or .pkl.")
@click.option("--data", type=PathArg, required=True, help="NVIDIA-layout dataset directory.")
@click.option("--metrics", default="swd", show_default=True,
              help="Comma-separated: fid50k, fid50k_full, kid50k_full, pr50k3_full, is50k, "
                   "ppl2_wend, swd.")
@click.option("--out", type=OutDir, required=True,
              help="Directory for metric-<name>.jsonl (appended).")
@click.option("--num-images", type=click.IntRange(min=2), default=None,
              help="Cap every image count (default: each metric's own, e.g. 50000 for fid50k).")
@click.option("--truncation-psi", type=FiniteFloat(), default=1.0, show_default=True,
              help="ψ (any finite number).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the fakes.")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per generator and detector call.")
@click.option("--reference-data", type=PathArg, default=None,
              help="Dataset directory whose images are every metric's reals, e.g. the full "
                   "dataset when --data is the subset the network was trained on (default: "
                   "--data).")
@click.option("--xla", is_flag=True,
              help="XLA-compile the generator and detector calls (default: off).")
@stage
def evaluate(network: Path, data: Path, metrics: str, out: Path, num_images: int | None,
             truncation_psi: float, seed: int, batch: int, reference_data: Path | None,
             xla: bool) -> None:
    """Evaluate a network against a dataset; one JSON line per metric and run.

    Detector files come from the weight cache ($STYLEGAN_CACHE, see fetch-weights);
    statistics of the reals are cached there per dataset content and detector."""
    from stylegan_ops.metrics import evaluate as stage_mod

    emit(stage_mod.run(stage_mod.EvaluateConfig(network, data, out,
                                                stage_mod.parse_metrics(metrics), num_images,
                                                truncation_psi, seed, batch, reference_data,
                                                xla)))


@main.command("fetch-weights")
@click.argument("names", nargs=-1)
@click.option("--from", "source", type=PathArg, default=None,
              help="Install this local file (the .pb, .tgz or .pkl) instead of downloading "
                   "(default: download).")
@click.option("--sha256", default=None,
              help="Expected sha256 of a file you vouch for (default: the release pin, else "
                   "the digest recorded when the official file was first fetched).")
@click.option("--accept-unpinned", is_flag=True,
              help="Install a file that matches no pin or recorded digest as a stand-in "
                   "(default: refuse it).")
@click.option("--url", default=None,
              help="Download from here (default: the official URL, or its "
                   "$STYLEGAN_WEIGHTS_MIRROR form); any other URL is trusted like --from.")
@stage
def fetch_weights(names: tuple[str, ...], source: Path | None, sha256: str | None,
                  accept_unpinned: bool, url: str | None) -> None:
    """Install detector weights (inception, vgg16, lpips or all) into the cache.

    A file from the official URL is trusted on first use: its sha256 is recorded in
    weights.json and every later fetch and use must match it. $STYLEGAN_WEIGHTS_MIRROR
    (a base URL) replaces the scheme and host of the official URLs.

    \b
    Examples:
      stylegan-ops fetch-weights all
      stylegan-ops fetch-weights inception --sha256 <hex from a source you trust>
      stylegan-ops fetch-weights vgg16 --from ~/Downloads/vgg16.pkl"""
    from stylegan_ops.metrics import weights as stage_mod

    wanted = list(stage_mod.WEIGHTS) if names in ((), ("all",)) else list(names)
    for name in wanted:
        stage_mod.weight_file(name)
    if len(wanted) > 1 and (source or sha256 or url):
        raise StageError("--from, --sha256 and --url apply to one file; name just one")
    results = []
    for name in wanted:
        got = stage_mod.fetch(name, source, sha256, accept_unpinned, url)
        how = (f"trusted on first use, recorded in {stage_mod.records_path()}"
               if got.first_use else got.trust)
        click.echo(f"stylegan-ops: {name}: {Path(got.path).name} sha256 {got.sha256} ({how})",
                   err=True)
        results.append(got.to_dict())
    emit(_Emit({"installed": results}))


@main.command("import-pkl")
@click.argument("pkl", type=PathArg)
@click.option("--out", type=OutDir, required=True, help="Snapshot directory to create.")
@stage
def import_pkl(pkl: Path, out: Path) -> None:
    """Convert NVIDIA's .pkl (G, D, Gs) into a snapshot, never executing its code."""
    from stylegan_ops import generate as stage_mod

    emit(_Emit(stage_mod.import_pickle(pkl, out)))


@main.command()
@click.argument("dag_id")
@click.option("--format", "fmt", type=click.Choice(["svg", "dot"]), default="svg",
              show_default=True, help="Graphviz source or an SVG rendered by `dot`.")
@click.option("--dags", "dag_folder", type=PathArg, default=None,
              help="DAG folder (default: Airflow's configured dags_folder).")
@click.option("--out", type=OutFile, default=None, help="File to write (default: stdout).")
@stage
def graph(dag_id: str, fmt: str, dag_folder: Path | None, out: Path | None) -> None:
    """Draw a DAG with its tasks coloured by function (data, pretrained, own model,
    versioning, repo trigger) and a legend. Needs the Airflow extra (the plugin package)."""
    import importlib

    from stylegan_ops.fsutil import write_atomic

    try:  # the library never imports Airflow; the plugin package does the DAG loading
        render = importlib.import_module("stylegan_airflow.graph").render
    except ImportError as exc:
        raise StageError(f"graph needs Airflow and the stylegan_airflow plugin: {exc}") from exc
    with contextlib.redirect_stdout(sys.stderr):  # Airflow logs while loading DAGs
        text = render(dag_id, fmt, str(dag_folder) if dag_folder else None)
    if out is None:
        click.echo(text, nl=False)
    else:
        write_atomic(out, text.encode())
        emit(_Emit({"dag_id": dag_id, "format": fmt, "out": str(out)}))


# --- the version store ---------------------------------------------------------------

def _store(ctx: click.Context, create: bool = False) -> Any:
    """The store of --store / $STYLEGAN_STORE / ./.stylegan-store; only writers create it.
    Damaged records its readers skipped are reported on stderr when the command ends."""
    from stylegan_ops.store.local import Store, default_root

    s = Store(Path(ctx.obj) if ctx.obj else default_root(), create=create)
    ctx.call_on_close(functools.partial(_report_skipped, s))
    return s


def _checked(*, names: tuple[str | None, ...] = (), tags: tuple[str, ...] = (),
             refs: tuple[str | None, ...] = ()) -> None:
    """Refuse a bad name, tag or ref before a store is opened (or created)."""
    from stylegan_ops.store.model import parse_ref, validate_name, validate_tag

    for name in names:
        if name is not None:
            validate_name(name)
    for tag in tags:
        validate_tag(tag)
    for ref in refs:
        if ref is not None:
            parse_ref(ref)


def _report_skipped(s: Any) -> None:
    """One warning line per damaged record a reader skipped (never an error line)."""
    for rel, message in sorted(s.record_problems.items()):
        click.echo(f"stylegan-ops: warning: skipped damaged {rel}: {message}", err=True)
    if s.record_problems:
        click.echo("stylegan-ops: warning: `stylegan-ops store fsck` moves damaged records to "
                   f"{s.root}/quarantine", err=True)


def _load_json_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = loads_strict(path.read_text())  # no NaN: nothing NaN may reach a record
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read JSON from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StageError(f"{path} must hold a JSON object")
    return data


@main.group()
@click.option("--store", "root", type=PathArg, default=None,
              help="Store directory (default: $STYLEGAN_STORE, else ./.stylegan-store).")
@click.pass_context
def store(ctx: click.Context, root: Path | None) -> None:
    """Immutable, content-addressed versions with lineage.

    \b
    Refs: NAME, NAME:latest, NAME:vN, NAME:TAG, NAME@ID-PREFIX
    Examples:
      stylegan-ops store snapshot data/lsun-cat-256 --name lsun-cat-256 --tag demo
      stylegan-ops store log lsun-cat-256
      stylegan-ops store checkout lsun-cat-256:v1 /tmp/cats
      stylegan-ops store pull http://host:8000 lsun-cat-256:latest
      stylegan-ops store verify --repair ; stylegan-ops store fsck
    """
    ctx.obj = root


@store.command("snapshot")
@click.argument("directory", type=PathArg)
@click.option("--name", required=True, help="Version name, e.g. lsun-cat-256 (required).")
@click.option("--tag", "tags", multiple=True, help="Tag to set on the version (repeatable).")
@click.option("--lineage-json", type=PathArg, default=None,
              help="JSON file with the lineage record (default: empty lineage).")
@click.option("--meta-json", type=PathArg, default=None,
              help="JSON file with free metadata, e.g. metrics (default: none).")
@click.pass_context
@stage
def store_snapshot(ctx: click.Context, directory: Path, name: str, tags: tuple[str, ...],
                   lineage_json: Path | None, meta_json: Path | None) -> None:
    """Commit DIRECTORY as the next version of --name."""
    from stylegan_ops.store.model import Lineage

    _checked(names=(name,), tags=tags)
    lineage = Lineage.from_dict(_load_json_file(lineage_json))
    version, created = _store(ctx, create=True).snapshot(directory, name, tags, lineage,
                                            _load_json_file(meta_json))
    emit(_Emit({**version.to_dict(), "ref": version.ref, "created": created}))


@store.command("list")
@click.argument("name", required=False)
@click.pass_context
@stage
def store_list(ctx: click.Context, name: str | None) -> None:
    """Names in the store, or the versions of NAME (damaged records skipped, named on
    stderr)."""
    _checked(names=(name,))
    s = _store(ctx)
    if name is None:
        rows = []
        for n in s.names():
            versions = s.versions(n)
            rows.append({"name": n, "versions": len(versions), "latest": versions[-1].number})
        for r in rows:
            click.echo(f"{r['name']}\t{r['versions']} versions\tlatest v{r['latest']}", err=True)
        emit(_Emit({"names": rows, "skipped": sorted(s.record_problems)}))
        return
    tags = s.tags(name)
    flagged = s.damaged_objects()
    rows = []
    for v in s.versions(name):
        vtags = sorted(t for t, n in tags.items() if n == v.number)
        damaged = bool(flagged) and bool(_damaged_files(s, v, flagged))
        rows.append({"ref": v.ref, "id": v.id, "created": v.created, "tags": vtags,
                     "files": v.file_count, "bytes": v.total_size, "damaged": damaged})
        click.echo(f"{v.ref}\t{v.id[:12]}\t{v.created}\t{v.total_size}\t{','.join(vtags)}"
                   + ("\tDAMAGED" if damaged else ""), err=True)
    if not rows:
        hint = " (its records are damaged)" if s.damaged_records(name) else ""
        raise StageError(f"unknown version name {name!r}{hint}")
    emit(_Emit({"name": name, "versions": rows, "skipped": sorted(s.record_problems)}))


def _damaged_files(s: Any, v: Any, flagged: dict[str, Any]) -> list[dict[str, str]]:
    """Files of version ``v`` known to be damaged (flagged, missing or resized), no rehash."""
    try:
        entries = s.manifest(v.id).entries
    except StageError as exc:
        return [{"path": "", "problem": f"manifest: {exc}"}]
    out = []
    for e in entries:
        try:
            size = os.lstat(s.object_path(e.sha256)).st_size
        except OSError:
            size = None
        why = ("missing" if size is None else "size" if size != e.size
               else "content altered" if e.sha256 in flagged else None)
        if why:
            out.append({"path": e.path, "problem": why})
    return out


@store.command("show")
@click.argument("ref")
@click.pass_context
@stage
def store_show(ctx: click.Context, ref: str) -> None:
    """Manifest, lineage and metadata of REF, and its files known to be damaged."""
    _checked(refs=(ref,))
    s = _store(ctx)
    v = s.resolve(ref)
    tags = sorted(t for t, n in s.tags(v.name).items() if n == v.number)
    damaged = _damaged_files(s, v, s.damaged_objects())
    if damaged:
        click.echo(f"stylegan-ops: warning: {v.ref} is damaged ({len(damaged)} files, first: "
                   f"{damaged[0]['path']} {damaged[0]['problem']}); run `stylegan-ops store "
                   "verify --repair`, then re-pull or re-snapshot it", err=True)
    emit(_Emit({**v.to_dict(), "ref": v.ref, "tags": tags, "damaged": damaged,
                "manifest": s.manifest(v.id).to_dict()}))


@store.command("log")
@click.argument("name")
@click.pass_context
@stage
def store_log(ctx: click.Context, name: str) -> None:
    """History of NAME, newest first, with lineage."""
    _checked(names=(name,))
    s = _store(ctx)
    versions = s.versions(name)
    if not versions:
        raise StageError(f"unknown version name {name!r}")
    for v in reversed(versions):
        lin = v.lineage
        click.echo(f"{v.ref} {v.id[:12]} {v.created} run={lin.run_id} commit={lin.git_commit}",
                   err=True)
    emit(_Emit({"name": name, "log": [v.to_dict() for v in reversed(versions)]}))


@store.command("diff")
@click.argument("ref_a")
@click.argument("ref_b")
@click.pass_context
@stage
def store_diff(ctx: click.Context, ref_a: str, ref_b: str) -> None:
    """Files added, removed and changed from REF_A to REF_B."""
    _checked(refs=(ref_a, ref_b))
    s = _store(ctx)
    a = {e.path: e for e in s.manifest(s.resolve(ref_a).id).entries}
    b = {e.path: e for e in s.manifest(s.resolve(ref_b).id).entries}
    emit(_Emit({"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
                "changed": sorted(p for p in set(a) & set(b) if a[p].sha256 != b[p].sha256)}))


@store.command("checkout")
@click.argument("ref")
@click.argument("directory", type=OutDir)
@click.option("--verify", is_flag=True,
              help="Rehash every object first (default: rehash only ones whose stat changed "
                   "since they were last known good).")
@click.option("--replace", is_flag=True,
              help="Swap out DIRECTORY once the checkout is complete, if it is a previous "
                   "checkout holding nothing else (default: it must be absent or empty).")
@click.option("--mode", type=click.Choice(["auto", "reflink", "link", "copy"]),
              default="auto", show_default=True,
              help="reflink: copy-on-write clones; link: hard links (a write through them "
                   "is detected on next use); copy; auto: the first that works, in that order.")
@click.pass_context
@stage
def store_checkout(ctx: click.Context, ref: str, directory: Path, verify: bool,
                   replace: bool, mode: str) -> None:
    """Materialise REF read-only into DIRECTORY (must be absent or empty)."""
    _checked(refs=(ref,))
    v = _store(ctx).checkout(ref, directory, verify, replace, mode)
    emit(_Emit({"ref": v.ref, "id": v.id, "name": v.name, "out": str(directory)}))


@store.command("verify")
@click.argument("ref", required=False)
@click.option("--repair", is_flag=True,
              help="Then run fsck: damaged objects and records go to quarantine/, so a "
                   "re-pull or re-snapshot can restore them (default: report only).")
@click.pass_context
@stage
def store_verify(ctx: click.Context, ref: str | None, repair: bool) -> None:
    """Rehash the objects of REF (default: every version); exit 2 on any problem."""
    _checked(refs=(ref,))
    s = _store(ctx)
    checked, problems = s.verify(ref)
    out: dict[str, Any] = {"versions": checked, "problems": [p.to_dict() for p in problems],
                           "leftovers": s.leftovers()}
    if repair:
        out["repaired"] = s.fsck()
        s.record_problems.clear()
        checked, problems = s.verify(ref, full=False)
        out["remaining"] = [p.to_dict() for p in problems]
    emit(_Emit(out))
    if problems:
        p = problems[0]
        raise StageError(f"{len(problems)} damaged or missing files or records, first: "
                         f"{p.version} {p.path} ({p.problem})"
                         + ("" if repair else "; `store verify --repair` quarantines them"))


@store.command("fsck")
@click.option("--dry-run", is_flag=True, help="Report only (default: act).")
@click.pass_context
@stage
def store_fsck(ctx: click.Context, dry_run: bool) -> None:
    """Clean what killed writers left, move damaged records and flagged objects to
    quarantine/, rebuild caches and indexes. Never deletes a version."""
    emit(_Emit(_store(ctx).fsck(dry_run)))


@store.command("tag")
@click.argument("ref")
@click.argument("tag")
@click.pass_context
@stage
def store_tag(ctx: click.Context, ref: str, tag: str) -> None:
    """Point TAG of REF's name at REF (moves it if it exists)."""
    _checked(refs=(ref,), tags=(tag,))
    v = _store(ctx).tag(ref, tag)
    emit(_Emit({"ref": v.ref, "tag": tag}))


@store.command("untag")
@click.argument("name")
@click.argument("tag")
@click.pass_context
@stage
def store_untag(ctx: click.Context, name: str, tag: str) -> None:
    """Remove TAG from NAME."""
    _checked(names=(name,), tags=(tag,))
    _store(ctx).untag(name, tag)
    emit(_Emit({"name": name, "untagged": tag}))


@store.command("gc")
@click.option("--dry-run", is_flag=True, help="Report only (default: delete).")
@click.pass_context
@stage
def store_gc(ctx: click.Context, dry_run: bool) -> None:
    """Delete objects no version references and what killed writers left; collects
    nothing while a version record is damaged (run fsck)."""
    emit(_Emit(_store(ctx).gc(dry_run)))


@store.command("pull")
@click.argument("url")
@click.argument("ref")
@click.option("--retries", type=click.IntRange(min=0), default=8, show_default=True,
              help="Failed attempts in a row (none getting further) before giving up.")
@click.option("--timeout", type=FiniteFloat(min=0.001), default=60.0, show_default=True,
              help="Seconds without data before a connection counts as stalled.")
@click.option("--backoff", type=FiniteFloat(min=0.0), default=1.0, show_default=True,
              help="First retry delay in seconds; doubles per retry, at most 60.")
@click.option("--deadline", type=FiniteFloat(min=0.0, min_open=True), default=None,
              help="Seconds for the whole pull (default: no limit).")
@click.pass_context
@stage
def store_pull(ctx: click.Context, url: str, ref: str, retries: int, timeout: float,
               backoff: float, deadline: float | None) -> None:
    """Copy REF from the read-only remote store at URL, verifying every object."""
    from stylegan_ops.fetch import Budget, check_url
    from stylegan_ops.store.remote import pull

    check_url("remote store URL", url)  # before a store is created for nothing
    budget = Budget(retries, timeout, backoff, deadline)
    v, created = pull(_store(ctx, create=True), url, ref, budget)
    emit(_Emit({**v.to_dict(), "ref": v.ref, "created": created}))


@store.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to bind (0: any free port).")
@click.pass_context
@stage
def store_serve(ctx: click.Context, host: str, port: int) -> None:
    """Publish the store read-only over HTTP (static files, no listings)."""
    from stylegan_ops.store.remote import serve

    published = _store(ctx)
    httpd = serve(published, host, port)
    click.echo(f"serving {published.root} on http://{host}:{httpd.server_address[1]}",
               err=True)
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()


if __name__ == "__main__":
    main()
