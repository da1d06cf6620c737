"""``sem restore``'s FFT threads: one thread against every allowed core, in one run.

The blind PSF estimate and the deconvolutions are FFTs on the whole frame; ``sem restore`` runs
them on every core it may use (``sem_train.restoration.threads``). This times the bare
restoration (estimate included, ``--psf auto``) of a large frame (the real resist-line
micrograph, info bar removed, mirrored to ``--size``) with one thread and with all, alternating,
and checks that the outputs are bit-identical.

Run: uv run --frozen python benchmarks/bench_restore_threads.py [--size 2880 3840] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_restore import default_image
from sem_physics import read_image
from sem_train.restoration import prepare
from sem_train.restoration.threads import fft_threads, using_fft_threads


def frame(size: tuple[int, int]) -> np.ndarray:
    img = read_image(default_image()).without_info_bar().data.astype(np.float32)
    reps = (-(-size[0] // img.shape[0]), -(-size[1] // img.shape[1]))
    tiles = np.block(
        [
            [img[:: 1 - 2 * (i % 2), :: 1 - 2 * (j % 2)] for j in range(reps[1])]
            for i in range(reps[0])
        ]
    )
    return np.ascontiguousarray(tiles[: size[0], : size[1]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(2880, 3840))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", nargs="*", default=["wiener", "richardson-lucy"])
    args = parser.parse_args()
    y = frame(tuple(args.size))
    many = fft_threads()
    print(f"frame {y.shape[1]} x {y.shape[0]} px; threads: 1 against {many}")
    for name in args.methods:
        method = prepare(name)
        times: dict[int, list[float]] = {1: [], many: []}
        outs: dict[int, np.ndarray] = {}
        for _ in range(args.repeats):
            for n in (1, many):
                with using_fft_threads(n):
                    t0 = time.perf_counter()
                    outs[n] = method._restore(y).image
                    times[n].append(time.perf_counter() - t0)
        one, all_ = min(times[1]), min(times[many])
        same = np.array_equal(outs[1], outs[many])
        print(
            f"{name:18s} 1 thread {one:6.2f} s   {many} threads {all_:6.2f} s   "
            f"ratio {one / all_:4.2f}x   bit-identical: {same}"
        )


if __name__ == "__main__":
    main()
