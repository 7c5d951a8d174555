"""The built-in architectures' layers without TensorFlow equal the Keras-built model's, field by field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mobiledeploy.cost.arch_layers import COVERED, arch_layers, arch_nodes
from mobiledeploy.cost.info import config_stats, keras_config_stats
from mobiledeploy.errors import UsageError


def _keras_layers(arch, **kw):
    import keras

    from mobiledeploy.cost.graph import keras_layers
    from mobiledeploy.cost.info import build_config_model

    keras.backend.clear_session()  # Keras' auto-names (re_lu, re_lu_1, ...) start afresh, as in a new process
    return keras_layers(build_config_model(arch, **kw))


def _assert_same(arch, **kw):
    mine, ref = arch_layers(arch, **kw), _keras_layers(arch, **kw)
    assert len(mine) == len(ref)
    for a, b in zip(mine, ref):
        assert a.to_json() == b.to_json(), (arch, kw, a.name, b.name)  # every field, named on failure
    assert mine == ref


FAST = [("mobilenet_v1", dict(alpha=0.25, resolution=128)),
        ("mobilenet_v1", dict(alpha=0.5, resolution=160)),
        ("mobilenet_v1", dict(alpha=0.75, resolution=192, classes=10, depth_multiplier=2)),
        ("mobilenet_v1", dict(alpha=1.0, resolution=224)),
        ("mobilenet_v2", dict(alpha=0.35, resolution=160)),
        ("mobilenet_v3_small", dict(alpha=0.75, resolution=193)),
        ("mobilenet_v3_large", dict(alpha=1.0, resolution=128, classes=7))]


@pytest.mark.parametrize("arch,kw", FAST, ids=[f"{a}-{k['alpha']}-{k['resolution']}" for a, k in FAST])
def test_layers_equal_the_keras_models(arch, kw):
    _assert_same(arch, **kw)


SLOW = [(arch, dict(alpha=alpha, resolution=res, classes=classes, **({"depth_multiplier": dm} if dm else {})))
        for arch, dms in (("mobilenet_v1", (1, 3)), ("mobilenet_v2", (0,)), ("mobilenet_v3_small", (0,)),
                          ("mobilenet_v3_large", (0,)))
        for alpha in (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
        for res, classes, dm in ((128, 1000, dms[0]), (131, 10, dms[-1]), (224, 1000, dms[0]), (33, 3, dms[0]))]


@pytest.mark.slow
@pytest.mark.parametrize("arch,kw", SLOW)
def test_layers_equal_the_keras_models_wide_grid(arch, kw):
    _assert_same(arch, **kw)


def test_config_stats_equal_the_keras_path():
    kw = dict(alpha=0.5, resolution=160, classes=1000)
    import keras

    keras.backend.clear_session()
    ref = keras_config_stats("mobilenet_v1", **kw)
    new = config_stats("mobilenet_v1", **kw)
    assert new == ref  # arch, alpha, resolution, totals, layers, format, precision, source, input shape
    assert new.to_json() == ref.to_json()


def test_covers_every_architecture_and_checks_arguments():
    from mobiledeploy.models.archs import ARCHS

    assert set(COVERED) == set(ARCHS)
    with pytest.raises(UsageError, match="--alpha"):
        arch_nodes("mobilenet_v1", alpha=0.0)
    with pytest.raises(UsageError, match="--arch"):
        arch_nodes("resnet50")
    with pytest.raises(UsageError, match="depth multiplier"):
        arch_nodes("mobilenet_v2", depth_multiplier=2)


def test_an_alpha_keras_cannot_build_is_refused_by_both_paths():
    with pytest.raises(UsageError, match="cannot build mobilenet_v1.*0 filters"):
        arch_layers("mobilenet_v1", alpha=0.01)
    with pytest.raises(UsageError, match="cannot build mobilenet_v1"):
        keras_config_stats("mobilenet_v1", alpha=0.01)


def test_estimate_and_info_of_a_config_never_import_tensorflow(tmp_path):
    est, inf = tmp_path / "est.json", tmp_path / "info.json"
    code = ("import sys; from mobiledeploy.cli import cli; "
            "rcs = [cli.main(a, standalone_mode=False) for a in ("
            "['estimate', '--arch', 'mobilenet_v1', '--alpha', '0.5', '--res', '160', '--target', 'pixel4', "
            f"'--json', {str(est)!r}], "
            f"['info', '--arch', 'mobilenet_v3_small', '--res', '128', '--json', {str(inf)!r}])]; "
            "print(rcs, 'tensorflow' in sys.modules, 'keras' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.split()[-2:] == ["False", "False"], r.stderr
    e, i = json.loads(est.read_text()), json.loads(inf.read_text())
    assert e["latency_ms"] > 0 and len(e["layers"]) == 31
    assert i["arch"] == "mobilenet_v3_small" and i["macs"] > 0
