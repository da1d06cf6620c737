"""Wiener and Richardson-Lucy load scikit-image's restoration module (and with it scipy.signal
and scipy.stats) only for the paper preset, which calls it; the default preset never does."""

from __future__ import annotations

from sem_physics.testing import python_output

SKIPPED = ("skimage.restoration", "scipy.signal", "scipy.stats")


def test_the_adaptive_presets_do_not_load_skimage_restoration_or_scipy_signal() -> None:
    loaded = f"print(sorted(m for m in {SKIPPED!r} if m in sys.modules))\n"
    code = (
        "import sys\nimport numpy as np\nimport sem_baselines\n"
        "image = np.random.default_rng(0).uniform(50, 200, (64, 64)).astype(np.float32)\n"
        "for name in ('wiener', 'richardson-lucy'):\n"
        "    assert sem_baselines.get_restorer(name).restore(image).shape == (64, 64)\n"
        + loaded
        + "sem_baselines.get_restorer('wiener', preset='paper').restore(image)\n"
        + loaded
    )
    adaptive, paper = python_output(code).splitlines()
    assert adaptive == "[]"
    assert "skimage.restoration" in paper  # the paper preset imports it when it runs


def test_the_paper_presets_still_call_scikit_image() -> None:
    import numpy as np
    from sem_baselines import get_restorer
    from sem_baselines.classical.richardson_lucy import RichardsonLucyRestorer
    from sem_baselines.classical.wiener import WienerRestorer
    from skimage.restoration import richardson_lucy, wiener

    rng = np.random.default_rng(3)
    ext = rng.uniform(0.1, 0.9, (40, 48))
    kernel = np.outer(np.hanning(7), np.hanning(7))
    kernel /= kernel.sum()
    got_w = WienerRestorer.paper_deconvolve(ext, kernel, 0.01)
    got_rl = RichardsonLucyRestorer.paper_deconvolve(ext, kernel, 5)
    assert np.array_equal(got_w, wiener(ext, kernel, 0.01, clip=False))
    assert np.array_equal(got_rl, richardson_lucy(ext, kernel, num_iter=5, clip=False))
    image = (255 * ext).astype(np.float32)
    assert get_restorer("wiener", preset="paper").restore(image).shape == image.shape
