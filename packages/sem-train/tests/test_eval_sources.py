"""Generated evaluation images: the kinds a benchmark config asks for, each with stable seeds."""

from __future__ import annotations

import numpy as np
import pytest
from sem_physics import make_sample
from sem_train.evaluation.config import load_benchmark_config, make_config
from sem_train.evaluation.sources import sample_images


def test_each_kind_keeps_its_images_whatever_the_other_kinds() -> None:
    default = sample_images(1, (64, 80), seed=5)
    chosen = sample_images(1, (64, 80), seed=5, kinds=("resist", "lines"))
    assert [im.kind for im in chosen] == ["resist", "lines"]
    np.testing.assert_array_equal(chosen[1].data, default[0].data)  # the same lines image
    np.testing.assert_array_equal(chosen[0].data, make_sample("resist", (64, 80), seed=5300))
    with pytest.raises(ValueError, match="unknown sample kind 'wires'"):
        sample_images(1, (64, 80), seed=5, kinds=("wires",))


def test_benchmark_config_takes_generated_kinds(tmp_path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("protocol: s2s\ngenerated: {n_per_kind: 2, kinds: [resist]}\n")
    assert load_benchmark_config(path).generated.kinds == ("resist",)
    with pytest.raises(ValueError, match="kinds"):
        make_config({"protocol": "s2s", "generated": {"kinds": ["wires"]}})
