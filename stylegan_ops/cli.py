"""``stylegan-ops``: one sub-command per stage; each prints its result as the last stdout line."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stylegan_ops import __version__
from stylegan_ops.errors import StageError

PathArg = click.Path(path_type=Path)
ExistingPath = click.Path(path_type=Path, exists=True)


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


def emit(result: Any) -> None:
    """Print the stage result as one JSON line: the task's XCom in Airflow."""
    click.echo(json.dumps(result.to_dict(), sort_keys=True))


def stage(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn StageError into a one-line message and exit status 2."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StageError as exc:
            click.echo(f"stylegan-ops: error: {exc}", err=True)
            sys.exit(2)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr (default: info).")
def main(verbose: bool) -> None:
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
@click.option("--out", type=PathArg, required=True, help="File to write (required).")
@click.option("--md5", help="Expected md5 as hex (default: none).")
@click.option("--md5-url", help="URL of the published .md5 file (default: none).")
@click.option("--sha256", help="Expected sha256 as hex (default: none).")
@click.option("--retries", type=click.IntRange(min=0), default=8, show_default=True,
              help="Failed attempts in a row before giving up.")
@click.option("--timeout", type=click.FloatRange(min=0.001), default=30.0, show_default=True,
              help="Seconds without data before a connection counts as stalled.")
@click.option("--backoff", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="First retry delay in seconds; doubles per retry, at most 60.")
@stage
def download(url: str, out: Path, md5: str | None, md5_url: str | None, sha256: str | None,
             retries: int, timeout: float, backoff: float) -> None:
    """Download URL to --out, resuming FILE.part and verifying the checksum."""
    from stylegan_ops.data import download as stage_mod

    emit(stage_mod.run(stage_mod.DownloadConfig(url, out, md5, md5_url, sha256, retries,
                                                timeout, backoff)))


@main.command()
@click.argument("archive", type=PathArg)
@click.option("--out", type=PathArg, required=True, help="Directory to create (required).")
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
        click.option("--out", type=PathArg, required=True,
                     help="Dataset directory to create; its name prefixes the files."),
        click.option("--resolution", type=int, default=256, show_default=True,
                     help="Output size in pixels, a power of two >= 4."),
        click.option("--max-images", type=int, default=None,
                     help="Stop after this many decodable images (default: all)."),
        click.option("--workers", type=int, default=1, show_default=True,
                     help="Local processes; the output bytes do not depend on it."),
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
@click.option("--out", type=PathArg, required=True, help="Dataset directory to create.")
@stage
def prepare_merge(shards: tuple[Path, ...], out: Path) -> None:
    """Merge the shard directories of one `prepare --shard i/N` request into a dataset."""
    from stylegan_ops.data import prepare as stage_mod

    emit(stage_mod.merge(list(shards), out))


@main.command("make-sample-lmdb")
@click.option("--out", type=PathArg, required=True, help="LMDB directory to create.")
@click.option("--count", type=int, default=1000, show_default=True,
              help="Decodable images to generate.")
@click.option("--bad", type=int, default=None,
              help="Corrupt or empty records added (default: 2%, at least 2).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--workers", type=int, default=os.cpu_count() or 1,
              help="Processes drawing images (default: all cores).")
@stage
def make_sample_lmdb(out: Path, count: int, bad: int | None, seed: int, workers: int) -> None:
    """Generate the embedded sample: an LSUN-format LMDB of cartoon cats."""
    from stylegan_ops.data import sample as stage_mod

    emit(stage_mod.run(stage_mod.SampleConfig(out, count, bad, seed, workers)))


@main.command()
@click.argument("path", type=PathArg)
@click.option("--limit", type=int, default=None,
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


if __name__ == "__main__":
    main()
