"""Convergence: SWD against kimg for the `small` preset at 32 px on the embedded sample, on
this machine's CPU, each run a real `stylegan-ops train --metrics swd` command:

  (a)  from scratch on the sample (default: 1000 images);
  (a') from scratch on 250 of those images, the comparison for (b);
  (b)  from scratch with ADA (--aug ada) on those 250 images, p moving at --ada-kimg (ADA's
       500 kimg per unit would leave p near 0 in a run this short);
  (c)  fine-tuned (--init) from a base network trained on a disjoint part of the sample
       (other images: --offset) drawn in the other palette (--palette alt).

Every run's SWD is measured against the same reals, the full sample (--reference-data),
so the curves compare. Writes <out>/convergence.png (the curves), <out>/fakes.png (each
run's final fakes grid beside the reals) and <out>/results.json, and prints the issue's
targets next to the measured numbers:
  (a) its final SWD and wall time against the demo's budget (look at its grid: cats?);
  (c) reaches (a)'s final SWD in at most a quarter of (a)'s kimg;
  (b) ends lower than (a') on the same 250 images.

A finished step (sample, dataset, run) is kept and reused while its command line is
unchanged, so an interrupted benchmark continues where it stopped.

Usage: python benchmarks/convergence.py [--kimg 40] [--base-kimg 40] [--out DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from stylegan_ops.store.reuse import local_code
from stylegan_ops.training import FAKES_RE, name_kimg

RESOLUTION = 32
DEMO_BUDGET_S = 600.0  # `make demo` must finish in 10 minutes on 2 cores, all of it
COLOURS = {"a": (31, 119, 180), "a250": (127, 127, 127), "b": (214, 39, 40),
           "c": (44, 160, 44)}


@dataclass
class Run:
    key: str  # a, a250, b, base, c
    label: str
    data: Path
    kimg: float
    extra: list[str] = field(default_factory=list)
    swd: list[tuple[float, float]] = field(default_factory=list)  # (kimg, swd_avg)
    train_s: list[float] = field(default_factory=list)  # training time at each snapshot
    wall_s: float = 0.0  # the whole command, SWD evaluations and compilation included
    trained_s: float = 0.0  # its ticks' time: compilation included, snapshots and SWD not
    final_p: float | None = None  # ADA's augment probability at the end
    scored: bool = True  # SWD at every snapshot


def cli() -> list[str]:
    """The `stylegan-ops` installed beside this Python, as a user runs it."""
    script = Path(sys.executable).with_name("stylegan-ops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "stylegan_ops.cli"]


def stamp_of(out: Path) -> Path:
    return out.with_name(out.name + ".done.json")


def step(out: Path, args: list[str], inputs: tuple[Path, ...] = ()) -> tuple[dict[str, Any],
                                                                             float]:
    """Run ``stylegan-ops ARGS`` creating ``out``, or reuse an ``out`` that the same command
    line and code finished before, after the steps that made its ``inputs``. Returns the
    stage's JSON result and the command's wall time."""
    stamp = stamp_of(out)
    if stamp.is_file() and out.exists():
        done = json.loads(stamp.read_text())
        fresh = all(stamp_of(i).is_file() and stamp_of(i).stat().st_mtime_ns
                    <= stamp.stat().st_mtime_ns for i in inputs)
        if done["args"] == args and done.get("code") == local_code() and fresh:
            print(f"  reusing {out} ({done['wall_s']:.0f} s when made)", flush=True)
            return done["result"], float(done["wall_s"])
    stamp.unlink(missing_ok=True)
    if out.exists():  # a run that stopped half way, or one made with other arguments
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name(out.name + ".log")
    print(f"  stylegan-ops {' '.join(args)}  (log: {log})", flush=True)
    started = time.monotonic()
    with log.open("w") as err:
        proc = subprocess.run([*cli(), *args], stdout=subprocess.PIPE, stderr=err, text=True,
                              check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"convergence: `stylegan-ops {args[0]}` failed ({proc.returncode}): {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stamp.write_text(json.dumps({"args": args, "code": local_code(), "result": result,
                                 "wall_s": wall}))
    return result, wall


def datasets(work: Path, images: int, subset: int, workers: int) -> dict[str, Path]:
    """The sample, a subset of it, and a part disjoint from it in the alt palette."""
    data = work / "data"
    lmdb_main, lmdb_alt = data / "sample-lmdb", data / "sample-alt-lmdb"
    lmdb_subset = data / "sample-subset-lmdb"
    step(lmdb_main, ["make-sample-lmdb", "--out", str(lmdb_main), "--count", str(images),
                     "--workers", str(workers)])
    # images [0, subset) of the stream: the same bytes as in the sample, where key order
    # scatters them, so the first N reference images hold their fair share of them and no
    # more (what a --metrics-images cap below --images would otherwise bias)
    step(lmdb_subset, ["make-sample-lmdb", "--out", str(lmdb_subset), "--count", str(subset),
                       "--workers", str(workers)])
    # images [images, 2 * images) of the same stream: no picture in common with the sample
    step(lmdb_alt, ["make-sample-lmdb", "--out", str(lmdb_alt), "--count", str(images),
                    "--offset", str(images), "--palette", "alt", "--workers", str(workers)])
    sets = {"full": (lmdb_main, images), "subset": (lmdb_subset, subset),
            "alt": (lmdb_alt, images)}
    out = {}
    for name, (lmdb, count) in sets.items():
        target = data / f"cats{RESOLUTION}-{name}"
        step(target, ["prepare", "lsun", str(lmdb), "--out", str(target), "--resolution",
                      str(RESOLUTION), "--max-images", str(count), "--workers", str(workers)],
             (lmdb,))
        out[name] = target
    return out


def train(run: Run, work: Path, reference: Path, args: argparse.Namespace,
          inputs: tuple[Path, ...]) -> None:
    out = work / "runs" / run.key
    command = ["train", "--data", str(run.data), "--out", str(out), "--config", "small",
               "--batch", str(args.batch), "--total-kimg", f"{run.kimg:g}",
               "--tick-kimg", f"{run.kimg / args.points:g}", "--seed", "0", *run.extra]
    if run.scored:
        command += ["--snapshot-ticks", "1", "--metrics", "swd",
                    "--metrics-images", str(args.metrics_images),
                    "--reference-data", str(reference)]
    else:  # only its final network matters, scored once by base_start
        command += ["--snapshot-ticks", str(args.points)]
    print(f"{run.label}", flush=True)
    _, run.wall_s = step(out, command, inputs)
    read_run(run, out)


def read_run(run: Run, out: Path) -> None:
    """SWD per snapshot from metric-swd.jsonl; training time per snapshot from the ticks'
    seconds in stats.jsonl (snapshot saving and SWD evaluation excluded)."""
    metric = out / "metric-swd.jsonl"
    records = [json.loads(line) for line in metric.read_text().splitlines()] \
        if metric.is_file() else []
    run.swd = sorted((float(r["kimg"]), float(r["results"]["swd_avg"])) for r in records
                     if r["results"].get("swd_avg") is not None)
    ticks = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    elapsed, previous, at = 0.0, 0.0, {}
    for tick in ticks:
        elapsed += (tick["kimg"] - previous) * tick["sec_per_kimg"]
        previous = tick["kimg"]
        at[round(tick["kimg"], 3)] = elapsed
    # a snapshot is taken at the end of a tick, so each one has its tick
    run.train_s = [at.get(round(k, 3), elapsed) for k, _ in run.swd]
    run.trained_s = elapsed
    run.final_p = ticks[-1].get("augment_p") if ticks else None


def base_start(base: Path, reference: Path, work: Path, metrics_images: int) -> float:
    """The base network's SWD on the reference set: (c)'s curve at 0 kimg."""
    out = work / "runs" / "base-eval"
    result, _ = step(out, ["evaluate", "--network", str(base / "network-final"), "--data",
                           str(reference), "--metrics", "swd", "--num-images",
                           str(metrics_images), "--out", str(out)], (base, reference))
    return float(result["results"]["swd"]["swd_avg"])


# --- pictures ------------------------------------------------------------------------------

def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    spacing = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / spacing - 1e-9) * spacing
    return [start + i * spacing for i in range(int((hi - start) / spacing + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    # within a decade 1, 2, 5 leave one or two ticks: then every mantissa
    mantissas = (1, 2, 5) if hi / lo > 10 else (1, 2, 3, 4, 5, 6, 7, 8, 9)
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0 ** e for m in mantissas if lo <= m * 10.0 ** e <= hi]
    return ticks


def plot(runs: list[Run], path: Path, target_swd: float | None, quarter_kimg: float | None,
         title: str) -> None:
    """SWD (log scale) against kimg, one line per run, with (c)'s target marked."""
    width, height, left, right, top, bottom = 1200, 720, 110, 40, 60, 90
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    small, big = font(16), font(20)
    points = [p for r in runs for p in r.swd]
    x_hi = max([k for k, _ in points] + [r.kimg for r in runs] + [1e-3])
    values = [v for _, v in points if v > 0] + ([target_swd] if target_swd else [])
    y_lo, y_hi = (min(values) / 1.15, max(values) * 1.15) if values else (1.0, 10.0)
    if y_hi / y_lo < 2:  # room for a few ticks
        mid = math.sqrt(y_lo * y_hi)
        y_lo, y_hi = mid / math.sqrt(2), mid * math.sqrt(2)

    def xy(kimg: float, swd: float) -> tuple[float, float]:
        x = left + (width - left - right) * kimg / x_hi
        frac = (math.log10(swd) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
        return x, height - bottom - (height - top - bottom) * frac

    x0, y0, x1, y1 = left, top, width - right, height - bottom
    for k in nice_ticks(0.0, x_hi):
        x, _ = xy(k, y_lo)
        draw.line((x, y0, x, y1), fill=(235, 235, 235))
        draw.line((x, y1, x, y1 + 6), fill="black")
        draw.text((x, y1 + 10), f"{k:g}", fill="black", font=small, anchor="mt")
    for v in log_ticks(y_lo, y_hi):
        _, y = xy(0.0, v)
        draw.line((x0, y, x1, y), fill=(235, 235, 235))
        draw.line((x0 - 6, y, x0, y), fill="black")
        draw.text((x0 - 10, y), f"{v:g}", fill="black", font=small, anchor="rm")
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text(((x0 + x1) / 2, height - 30), "kimg (thousands of real images shown to D)",
              fill="black", font=big, anchor="mm")
    draw.text((x0, y0 - 8), "SWD x1e3 (log scale)", fill="black", font=small, anchor="lb")
    draw.text(((x0 + x1) / 2, 22), title, fill="black", font=big, anchor="mm")
    if target_swd is not None:  # (c) must get below this line left of the vertical one
        _, y = xy(0.0, target_swd)
        for x in range(x0, x1, 16):
            draw.line((x, y, min(x + 8, x1), y), fill=COLOURS["a"], width=1)
        draw.text((x0 + 6, y - 4), "(a)'s final SWD", fill=COLOURS["a"], font=small,
                  anchor="lb")
    if quarter_kimg is not None:
        x, _ = xy(quarter_kimg, y_lo)
        for y in range(y0, y1, 16):
            draw.line((x, y, x, min(y + 8, y1)), fill=COLOURS["c"], width=1)
        draw.text((x + 6, y0 + 6), "1/4 of (a)'s kimg", fill=COLOURS["c"], font=small)
    for run in runs:
        colour = COLOURS[run.key]
        line = [xy(k, v) for k, v in run.swd if v > 0]
        if len(line) > 1:
            draw.line(line, fill=colour, width=3, joint="curve")
        for x, y in line:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    for i, run in enumerate(runs):  # legend, top right
        y = y0 + 18 + 26 * i
        draw.line((x1 - 330, y, x1 - 295, y), fill=COLOURS[run.key], width=3)
        draw.text((x1 - 285, y), run.label, fill="black", font=small, anchor="lm")
    img.save(path)


def latest_fakes(run_dir: Path) -> Path | None:
    grids = [p for p in run_dir.glob("fakes*.png") if FAKES_RE.match(p.name)]
    return max(grids, key=lambda p: name_kimg(p.name) or 0.0, default=None)


def grids(panels: list[tuple[str, Path]], path: Path) -> None:
    """The grids side by side, each under its label, at one common size."""
    images = [(label, Image.open(p).convert("RGB")) for label, p in panels]
    side = max(img.width for _, img in images)
    gap, head = 16, 40
    sheet = Image.new("RGB", (len(images) * (side + gap) + gap, side + head + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(images):
        x = gap + i * (side + gap)
        scaled = img.resize((side, side * img.height // img.width), Image.Resampling.NEAREST)
        sheet.paste(scaled, (x, head))
        draw.text((x + side / 2, head / 2), label, fill="black", font=font(18), anchor="mm")
    sheet.save(path)


# --- the report ----------------------------------------------------------------------------

def reached(run: Run, target: float, start: float | None = None) -> float | None:
    """The first kimg at which ``run``'s SWD is at most ``target`` (0 for its start)."""
    if start is not None and start <= target:
        return 0.0
    return next((k for k, v in run.swd if v <= target), None)


def report(runs: dict[str, Run], c_start: float, budget_s: float, subset: int
           ) -> dict[str, Any]:
    a, a250, b, c = runs["a"], runs["a250"], runs["b"], runs["c"]
    print("\nSWD x1e3 against kimg (training seconds, SWD evaluation excluded):")
    for run in (a, a250, b, runs["base"], c):
        points = "  ".join(f"{k:g}:{v:.1f}" for k, v in run.swd)
        print(f"  {run.label:44s} {points}")
        print(f"  {'':44s} trained {run.trained_s:.0f} s, "
              f"command {run.wall_s:.0f} s"
              + (f", ADA p {run.final_p:.3f}" if run.key == "b" and run.final_p is not None
                 else ""))
    print(f"  (c) starts at the base network's SWD {c_start:.1f}")

    a_final, a_time = a.swd[-1][1], a.train_s[-1]
    within = [v for v, t in zip((v for _, v in a.swd), a.train_s, strict=True) if t <= budget_s]
    quarter = a.kimg / 4
    c_kimg = reached(c, a_final, c_start)
    b_final, a250_final = b.swd[-1][1], a250.swd[-1][1]
    targets: dict[str, dict[str, Any]] = {
        "a": {"final_swd": a_final, "kimg": a.kimg, "train_s": a_time, "command_s": a.wall_s,
              "budget_s": budget_s, "within_budget": a_time <= budget_s,
              "best_swd_within_budget": min(within) if within else None},
        "c": {"target_swd": a_final, "reached_at_kimg": c_kimg, "limit_kimg": quarter,
              "met": c_kimg is not None and c_kimg <= quarter},
        "b": {"final_swd": b_final, "plain_250_final_swd": a250_final, "met": b_final < a250_final},
    }
    print("\nTargets:")
    print(f"  (a) final SWD {a_final:.1f} after {a.kimg:g} kimg in {a_time:.0f} s of training "
          f"({a.wall_s:.0f} s for the whole command); budget {budget_s:.0f} s: "
          f"{'within' if a_time <= budget_s else 'OVER'}. Look at its fakes grid: cats?")
    print(f"  (c) reaches (a)'s final SWD {a_final:.1f} at "
          + (f"{c_kimg:g} kimg" if c_kimg is not None else "no snapshot (never)")
          + f"; target <= {quarter:g} kimg (a quarter of (a)'s): "
          + ("met" if targets["c"]["met"] else "NOT met"))
    print(f"  (b) ADA on {subset} images ends at SWD {b_final:.2f}, plain training on the same "
          f"{subset} at {a250_final:.2f}: "
          + ("lower, met" if targets["b"]["met"] else "NOT lower"))
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kimg", type=float, default=40.0, help="kimg of (a), (a'), (b), (c)")
    parser.add_argument("--base-kimg", type=float, default=40.0, help="kimg of (c)'s base")
    parser.add_argument("--out", type=Path, default=Path("bench-out/convergence"))
    parser.add_argument("--images", type=int, default=1000, help="the sample's size")
    parser.add_argument("--subset", type=int, default=250, help="images of (a') and (b)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ada-kimg", type=float, default=10.0,
                        help="(b)'s ADA speed: kimg in which p can move by 1 (ADA's is 500)")
    parser.add_argument("--points", type=int, default=8,
                        help="SWD evaluations per run (a multiple of 4 puts one at (c)'s "
                             "limit, a quarter of the kimg)")
    parser.add_argument("--metrics-images", type=int, default=None,
                        help="fakes and reals per SWD (default: --images, all the reals)")
    parser.add_argument("--budget-s", type=float, default=DEMO_BUDGET_S,
                        help="the demo's time budget (a) is held to")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: checks the script end to end in a few minutes")
    args = parser.parse_args()
    if args.smoke:
        args.kimg, args.base_kimg, args.images, args.subset = 0.128, 0.064, 128, 64
        args.points = 2
        args.out = args.out.with_name(args.out.name + "-smoke")
    if args.metrics_images is None:
        args.metrics_images = args.images
    if not (0 < args.subset <= args.images and args.points >= 1 and args.kimg > 0
            and args.base_kimg > 0 and args.metrics_images >= 2 and args.batch >= 2
            and args.ada_kimg > 0):
        parser.error("need 0 < --subset <= --images, --points >= 1, --kimg and --base-kimg "
                     "> 0, --metrics-images >= 2, --batch >= 2, --ada-kimg > 0")
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    workers = os.cpu_count() or 1
    started = time.monotonic()
    if args.metrics_images < args.images:  # evaluate takes the reals in dataset order
        print(f"note: SWD sees only the first {args.metrics_images} of the {args.images} "
              f"reference images (in key order, a fair sample of them)", flush=True)
    print(f"data: {args.images} sample cats at {RESOLUTION} px, {args.subset} of them, and "
          f"{args.images} other ones in the alt palette", flush=True)
    data = datasets(work, args.images, args.subset, workers)
    reference = data["full"]
    n = args.subset
    runs = {
        "a": Run("a", f"(a) scratch, {args.images} images", data["full"], args.kimg),
        "a250": Run("a250", f"(a') scratch, {n} images", data["subset"], args.kimg),
        "b": Run("b", f"(b) scratch + ADA, {n} images", data["subset"], args.kimg,
                 ["--aug", "ada", "--ada-kimg", f"{args.ada_kimg:g}"]),
        "base": Run("base", f"base: alt palette, other {args.images}", data["alt"],
                    args.base_kimg, scored=False),
    }
    runs["c"] = Run("c", f"(c) fine-tuned from base, {args.images} images", data["full"],
                    args.kimg, ["--init", str(work / "runs" / "base" / "network-final")])
    base_dir = work / "runs" / "base"
    for key in ("a", "a250", "b", "base", "c"):
        inputs = (runs[key].data, reference) + ((base_dir,) if key == "c" else ())
        train(runs[key], work, reference, args, inputs)
    c_start = base_start(base_dir, reference, work, args.metrics_images)
    runs["c"].swd.insert(0, (0.0, c_start))
    runs["c"].train_s.insert(0, 0.0)

    shown = [runs[k] for k in ("a", "a250", "b", "c")]
    title = (f"small preset, {RESOLUTION} px, batch {args.batch}, {os.cpu_count()} CPU cores; "
             f"SWD vs the {args.images} sample cats")
    a_final = runs["a"].swd[-1][1] if runs["a"].swd else None
    plot(shown, work / "convergence.png", a_final, args.kimg / 4, title)
    panels = [("reals", work / "runs" / "a" / "reals.png")]
    for run in (*shown[:3], runs["base"], shown[3]):  # the base beside what it became
        grid = latest_fakes(work / "runs" / run.key)
        if grid is not None:
            panels.append((f"{run.label.split(',')[0]} @ {name_kimg(grid.name):g} kimg", grid))
    grids(panels, work / "fakes.png")
    targets = report(runs, c_start, args.budget_s, args.subset)
    results = {"args": {k: str(v) for k, v in vars(args).items()},
               "runs": {k: {"label": r.label, "kimg": r.kimg, "swd": r.swd,
                            "train_s": r.train_s, "trained_s": r.trained_s,
                            "command_s": r.wall_s,
                            "final_augment_p": r.final_p} for k, r in runs.items()},
               "targets": targets, "seconds": time.monotonic() - started}
    (work / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False,
                                                  default=str))
    print(f"\nwrote {work / 'convergence.png'}, {work / 'fakes.png'}, {work / 'results.json'} "
          f"in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
