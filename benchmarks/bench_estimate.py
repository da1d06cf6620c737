"""Accuracy and speed of the blind estimate ``estimate_degradation`` (not part of the test run).

Degrades real micrographs of the shared corpus (info bar removed, at most 960 x 1280) and the
project's sample images (960 x 1280) with seeded settings drawn from the paper's ranges, the
radii restricted to the targets' 2-30 px (``ParameterRanges(rx_px=(2, 30), ry_px=(2, 30))``),
and compares the estimate with the truth:

* radii: median and 90th percentile of ``|estimate / truth - 1|`` over both axes (canonical
  ellipses, ``rx >= ry``); the same over the elongated PSFs (axis ratio >= 3) alone; theta:
  median error in degrees where ``max / min radius >= 1.5``; sigma and dose: median relative
  error;
* time per image (median and maximum, and on the 960 x 1280 sample images alone);
* images whose estimate has no PSF (flagged flat) are listed; they are left out of the radius
  figures and counted again as failures in the "all cases" line;
* the reported uncertainties: the fraction of radii within one, two and three of their
  one-sigma errors of the truth;
* the quality flags: how many estimates say anything but ``ok`` (any flag), the worst-axis
  error (``max(|rx / true rx - 1|, |ry / true ry - 1|)``) of the ``ok`` estimates, median / 90th
  percentile / count above 50 %, and the flagged ones' median, and the estimates each check
  flags (by the first words of its reason);
* the leakage cross-check (a second fit on a tapered periodogram): how many estimates it
  flags, and the median worst-axis error of those it flags and of the others; with
  ``--wiener``, what the flagged estimates' reported radii (the two fits' midpoint) do to a
  blind-PSF Wiener deconvolution against the first fit's radii and the true PSF (PSNR after
  affine intensity matching to the focused image).

A reference is never perfectly sharp: its own blur (the estimate's major radius on the
undegraded reference, ``own``) adds to the simulated defocus, and the composite OTF is zero
beyond the smaller of the two cut-offs, so a defocus radius below ``own`` cannot be measured by
any method. The cases whose true minor radius is below ``own`` are counted and shown separately
("below the reference's own blur"); the headline figures include them.

``--settings``: ``targets`` (default) the paper's ranges with radii 2-30 px; ``paper`` the
paper's ranges as they are (radii 1-30 px); ``extreme`` the paper's ranges with extreme
astigmatism at their edge, long radius U(20, 30) px and short radius U(1, 3) px (whose OTF
reaches past Nyquist along the short axis when below 2 px); ``lowdose`` noisy fast scans: dose
log-uniform in 0.1-3 electrons per grey level (on a grid of ``1 / dose`` grey levels below 1),
sigma U(0.5, 5), radii U(2, 10) px, the rest from the paper's ranges, the observation clipped
to 0..255 as a detector's range is; its summary adds the figures per dose band.

Run: ``uv run python benchmarks/bench_estimate.py [--n 36] [--seeds 0 1 2] [--settings extreme]
[--quiet] [--wiener]``. Real
images come from ``SEM_CORPUS_DATA`` and ``SEM_REAL_DATA`` (or ``../shared/data`` beside the
clone).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from sem_physics import (
    SAMPLE_KINDS,
    ParameterRanges,
    crop_info_bar,
    degrade,
    estimate_degradation,
    make_sample,
    read_image,
)
from sem_physics.estimate import canonical_ellipse, estimate_errors

RANGES = ParameterRanges(rx_px=(2.0, 30.0), ry_px=(2.0, 30.0))
PAPER = ParameterRanges()
EXTREME_MAJOR, EXTREME_MINOR = (20.0, 30.0), (1.0, 3.0)
LOWDOSE_DOSE, LOWDOSE_RADIUS, LOWDOSE_SIGMA = (0.1, 3.0), (2.0, 10.0), (0.5, 5.0)
DOSE_BANDS = ((0.1, 0.3), (0.3, 1.0), (1.0, 3.0))
FAR_OFF = 0.5  # worst-axis relative error counted as far off
MAX_SHAPE = (960, 1280)
ELONGATED = 3.0  # axis ratio from which a PSF counts as elongated


def real_images() -> list[Path]:
    """Every real micrograph in the corpus folders, sorted."""
    here = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    folders = [
        os.environ.get("SEM_CORPUS_DATA") or here / "sem_corpus",
        os.environ.get("SEM_REAL_DATA") or here / "sem",
    ]
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            paths += [p for p in folder.rglob("*") if p.suffix.lower() in (".tif", ".png")]
    return sorted(paths)


def load_real(path: Path) -> np.ndarray:
    img = read_image(path)
    return crop_info_bar(img.data, img.info_bar_rows)[: MAX_SHAPE[0], : MAX_SHAPE[1]]


def cases(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``n`` focused images: every third a sample image, the others real, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    reals = real_images()
    out = []
    for i in range(n):
        if i % 3 == 2 or not reals:
            kind = SAMPLE_KINDS[(i // 3) % len(SAMPLE_KINDS)]
            out.append((f"sample:{kind}", make_sample(kind, MAX_SHAPE, seed=seed * 1000 + i)))
        else:
            path = reals[int(rng.integers(len(reals)))]
            out.append((path.name, load_real(path)))
    return out


def own_blur_px(reference: np.ndarray) -> float:
    """Major radius of the blur the reference itself carries (0 when no PSF is found)."""
    est = estimate_degradation(reference)
    return 0.0 if est.rx_px is None else float(est.rx_px)


def flagged_wiener_db(observed: np.ndarray, focused: np.ndarray, reported, true_psf) -> list:
    """Affine-matched PSNR (dB) of Wiener with the reported estimate, with the first fit's
    radii (the midpoint rule off) and with the true PSF, for one flagged case."""
    import sem_physics.estimate as estimate_module
    from sem_baselines import get_restorer
    from sem_metrology import psnr
    from sem_train.evaluation.quality import affine_match

    estimate_module.LEAKAGE_MIDPOINT = False
    estimate_module._RECENT.clear()  # the cached estimate is the reported one
    try:
        first = estimate_degradation(observed)
    finally:
        estimate_module.LEAKAGE_MIDPOINT = True
        estimate_module._RECENT.clear()
    scores = []
    for psf in (reported.psf_params(), first.psf_params(), true_psf):
        wiener = get_restorer("wiener", psf=psf, noise_var=reported.noise_floor)
        scores.append(psnr(focused, affine_match(wiener.restore(observed), focused)))
    return scores


def draw_setting(rng: np.random.Generator, settings: str):
    """One setting of ``settings`` (``targets``, ``paper``, ``extreme`` or ``lowdose``, see the
    docstring)."""
    if settings == "targets":
        return RANGES.sample(rng)
    params = PAPER.sample(rng)
    if settings == "lowdose":
        lo, hi = np.log(LOWDOSE_DOSE)
        update = {
            "rx_px": float(rng.uniform(*LOWDOSE_RADIUS)),
            "ry_px": float(rng.uniform(*LOWDOSE_RADIUS)),
            "sigma": float(rng.uniform(*LOWDOSE_SIGMA)),
            "dose": float(np.exp(rng.uniform(lo, hi))),
        }
        return params.model_copy(update=update)
    if settings == "extreme":
        major = float(rng.uniform(*EXTREME_MAJOR))
        minor = float(rng.uniform(*EXTREME_MINOR))
        params = params.model_copy(update={"rx_px": major, "ry_px": minor})
    return params


REASON_KEYS = {  # a phrase of each check's reason sentence -> its name in the summary
    "does not fix the blur": "leakage",
    "radius uncertain": "uncertain",
    "below 2 px": "below 2 px",
    "at the bound": "at bound",
    "does not fit the spectrum": "misfit",
    "low signal-to-noise": "low SNR",
    "sigma and dose not measured": "noise not measured",
}


def reason_key(reason: str) -> str:
    """The check behind one reason sentence."""
    for phrase, key in REASON_KEYS.items():
        if phrase in reason:
            return key
    return reason.split(":")[0]


def run_seed(
    n: int, seed: int, quiet: bool, wiener: bool = False, settings: str = "targets"
) -> dict[str, list]:
    """Estimate every case of one seed; per-case lines unless ``quiet``."""
    rng = np.random.default_rng([seed, 1])
    res: dict[str, list] = {k: [] for k in ("radius", "elong", "theta", "sigma", "dose", "time")}
    res |= {"sample_time": [], "flat": [], "below_own": [], "radius_resolvable": []}
    res |= {"z": [], "leak_flagged": [], "leak_other": [], "wiener_db": []}
    res |= {"ok_worst": [], "flagged_worst": [], "reasons": [], "ok_resolvable": []}
    res |= {"band": []}  # (true dose, ok, worst-axis error, |error| / one-sigma of both axes)
    res |= {"z_sigma": [], "z_dose": []}  # |error| / one-sigma of sigma and dose
    own_cache: dict[str, float] = {}
    for i, (name, focused) in enumerate(cases(n, seed)):
        params = draw_setting(rng, settings)
        observed = degrade(focused, params, rng=np.random.default_rng([seed, 2, i]))
        if settings == "lowdose":
            observed = np.clip(observed, 0.0, 255.0)
        t0 = time.perf_counter()
        est = estimate_degradation(observed)
        dt = time.perf_counter() - t0
        res["time"].append(dt)
        if name.startswith("sample:"):
            res["sample_time"].append(dt)
            own = own_blur_px(focused)
        else:
            own = own_cache.setdefault(name, own_blur_px(focused))
        err = estimate_errors(est, params)
        res["sigma"].append(abs(err["sigma"]))
        res["dose"].append(abs(err["dose"]))
        res["z_sigma"].append(abs(est.sigma - params.sigma) / est.sigma_err)
        res["z_dose"].append(abs(est.dose - params.dose) / est.dose_err)
        trx, try_, tth = canonical_ellipse(params.rx_px, params.ry_px, params.theta_rad)
        if err["rx_px"] is None:
            res["flat"].append(name)
            line = "no PSF: " + "; ".join(est.quality.reasons)
        else:
            pair = [abs(err["rx_px"]), abs(err["ry_px"])]
            res["radius"] += pair
            res["z"] += [
                abs(est.rx_px - trx) / est.rx_px_err,
                abs(est.ry_px - try_) / est.ry_px_err,
            ]
            res["ok_worst" if est.quality.ok else "flagged_worst"].append(max(pair))
            res["band"].append((params.dose, est.quality.ok, max(pair), res["z"][-2:]))
            if est.quality.ok and try_ >= own:
                res["ok_resolvable"].append(max(pair))
            res["reasons"].append(sorted({reason_key(r) for r in est.quality.reasons}))
            leak = any("does not fix the blur" in r for r in est.quality.reasons)
            res["leak_flagged" if leak else "leak_other"].append(max(pair))
            if leak and wiener:
                res["wiener_db"].append(flagged_wiener_db(observed, focused, est, params.psf))
            if trx / try_ >= ELONGATED:
                res["elong"] += pair
            if try_ < own:
                res["below_own"].append(max(pair))
            else:
                res["radius_resolvable"] += pair
            if err["theta_deg"] is not None:
                res["theta"].append(err["theta_deg"])
            line = (
                f"{est.rx_px:5.1f} {est.ry_px:5.1f} {np.degrees(est.theta_rad):4.0f}"
                f"  own {own:4.1f}  dose {params.dose:4.1f}/{est.dose:5.1f}"
                f" sigma {params.sigma:4.1f}/{est.sigma:4.1f}"
                f"  {'ok' if est.quality.ok else 'FLAGGED'} {max(pair):5.0%}"
            )
        if not quiet:
            t = f"{trx:5.1f} {try_:5.1f} {np.degrees(tth):4.0f}"
            print(f"{name[:28]:28s} {observed.shape!s:>11s}  {t}   {line}  {dt:.2f}", flush=True)
    return res


def pct(values: list[float] | np.ndarray, q: float) -> float:
    return 100 * float(np.percentile(values, q)) if len(values) else float("nan")


def summary(label: str, n: int, res: dict[str, list], settings: str = "targets") -> None:
    r, flat = res["radius"], res["flat"]
    all_r = np.concatenate([r, np.full(2 * len(flat), 1e9)])  # a missing estimate: failed
    print(f"{label}: cases {n}, with a PSF estimate {n - len(flat)}, flagged flat: {flat}")
    print(
        f"  radius |rel err|: median {pct(r, 50):.1f} %, 90th pct {pct(r, 90):.1f} % "
        f"(targets 10 %, 25 %); all cases (flat = failed): median {pct(all_r, 50):.1f} %, "
        f"90th pct {pct(all_r, 90):.1f} %"
    )
    print(
        f"  elongated (axis ratio >= {ELONGATED:g}, n={len(res['elong']) // 2}): median "
        f"{pct(res['elong'], 50):.1f} %, 90th pct {pct(res['elong'], 90):.1f} %"
    )
    below = res["below_own"]
    print(
        f"  true minor radius below the reference's own blur: {len(below)} cases (worst axis "
        f"error median {pct(below, 50):.0f} %); the others: median "
        f"{pct(res['radius_resolvable'], 50):.1f} %, 90th pct "
        f"{pct(res['radius_resolvable'], 90):.1f} %"
    )
    print(
        f"  theta error (axis ratio >= 1.5, n={len(res['theta'])}): median "
        f"{np.median(res['theta']):.1f} deg; sigma |rel err| median "
        f"{pct(res['sigma'], 50):.1f} % (target 20 %); dose |rel err| median "
        f"{pct(res['dose'], 50):.1f} % (target 30 %)"
    )
    zs, zd = np.asarray(res["z_sigma"]), np.asarray(res["z_dose"])
    print(
        f"  sigma within 1 / 2 / 3 of its one-sigma error: {100 * np.mean(zs < 1):.0f} / "
        f"{100 * np.mean(zs < 2):.0f} / {100 * np.mean(zs < 3):.0f} %; dose: "
        f"{100 * np.mean(zd < 1):.0f} / {100 * np.mean(zd < 2):.0f} / {100 * np.mean(zd < 3):.0f} %"
    )
    z = np.asarray(res["z"])
    flagged, other = res["leak_flagged"], res["leak_other"]
    print(
        f"  radii within 1 / 2 / 3 of their one-sigma errors: {100 * np.mean(z < 1):.0f} / "
        f"{100 * np.mean(z < 2):.0f} / {100 * np.mean(z < 3):.0f} % (normal: 68 / 95 / 99.7 %); "
        f"leakage check flags {len(flagged)} (worst-axis error median {pct(flagged, 50):.0f} %, "
        f"> 25 % in {sum(e > 0.25 for e in flagged)}), the others {len(other)} (median "
        f"{pct(other, 50):.0f} %, > 25 % in {sum(e > 0.25 for e in other)})"
    )
    ok, bad = res["ok_worst"], res["flagged_worst"]
    counts: dict[str, int] = {}
    for keys in res["reasons"]:
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
    print(
        f"  flagged (any flag): {len(bad)} of {len(ok) + len(bad)} (worst-axis error median "
        f"{pct(bad, 50):.0f} %, > {FAR_OFF:.0%} in {sum(e > FAR_OFF for e in bad)}); ok: {len(ok)}"
        f", worst-axis error median {pct(ok, 50):.1f} %, 90th pct {pct(ok, 90):.1f} %, > "
        f"{FAR_OFF:.0%} in {sum(e > FAR_OFF for e in ok)} (max {pct(ok, 100):.0f} %)"
    )
    okr = res["ok_resolvable"]
    print(
        f"  ok and true minor radius not below the reference's own blur: {len(okr)}, worst-axis "
        f"error median {pct(okr, 50):.1f} %, 90th pct {pct(okr, 90):.1f} %, > {FAR_OFF:.0%} in "
        f"{sum(e > FAR_OFF for e in okr)}"
    )
    print("  flags: " + "; ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if res["wiener_db"]:
        db = np.asarray(res["wiener_db"])
        gain, left = db[:, 0] - db[:, 1], db[:, 2] - db[:, 0]
        print(
            f"  flagged, Wiener PSNR after affine matching, reported minus first-fit radii: "
            f"median {np.median(gain):+.2f} dB, mean {gain.mean():+.2f}, range "
            f"{gain.min():+.2f} .. {gain.max():+.2f}; > 0.1 dB better in {np.sum(gain > 0.1)}, "
            f"worse in {np.sum(gain < -0.1)} of {len(gain)}; true PSF minus reported: median "
            f"{np.median(left):+.2f} dB"
        )
    if settings == "lowdose":
        for lo, hi in DOSE_BANDS:
            sel = [b for b in res["band"] if lo <= b[0] < hi]
            okw = [b[2] for b in sel if b[1]]
            zb = np.asarray([z for b in sel for z in b[3]])
            print(
                f"  dose {lo:g}-{hi:g}: {len(sel)} cases, flagged {len(sel) - len(okw)}; ok: "
                f"worst-axis error median {pct(okw, 50):.1f} %, 90th pct {pct(okw, 90):.1f} %, "
                f"> {FAR_OFF:.0%} in {sum(e > FAR_OFF for e in okw)}; all radii within 1 / 2 / 3 "
                f"one-sigma: {100 * np.mean(zb < 1):.0f} / {100 * np.mean(zb < 2):.0f} / "
                f"{100 * np.mean(zb < 3):.0f} %"
            )
    st = res["sample_time"]
    print(
        f"  time per image: median {np.median(res['time']):.2f} s, max {np.max(res['time']):.2f} s"
        + (
            f"; per 960x1280 image: median {np.median(st):.2f} s, max {np.max(st):.2f} s "
            "(target 1 s)"
            if st
            else ""
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=36, help="degradations per seed (>= 30)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quiet", action="store_true", help="summaries only")
    parser.add_argument(
        "--settings",
        choices=("targets", "paper", "extreme", "lowdose"),
        default="targets",
        help="targets: paper's ranges, radii 2-30 px; paper: radii 1-30 px; extreme: long "
        "radius 20-30 px, short 1-3 px; lowdose: dose 0.1-3, radii 2-10 px",
    )
    parser.add_argument(
        "--wiener", action="store_true", help="Wiener PSNR of the flagged cases (slower)"
    )
    args = parser.parse_args()
    total: dict[str, list] = {}
    for seed in args.seeds:
        if not args.quiet:
            print(f"{'image':28s} {'shape':>11s}  true (rx, ry, deg)     estimate (rx, ry, deg)")
        res = run_seed(args.n, seed, args.quiet, args.wiener, args.settings)
        summary(f"seed {seed}", args.n, res, args.settings)
        for key, values in res.items():
            total.setdefault(key, []).extend(values)
    if len(args.seeds) > 1:
        summary(f"seeds {args.seeds}", args.n * len(args.seeds), total, args.settings)


if __name__ == "__main__":
    main()
