"""What each method declares about itself: the settings its rows record."""
import pytest

import zaqbench.methods  # noqa: F401  (registers the methods)
from zaqbench.errors import UserError
from zaqbench.quant import QConfig
from zaqbench.registry import build_method


def test_settings_are_the_protocol_options_with_the_values_run():
    assert build_method("fp").settings() == {}
    assert build_method("ptq", batch_size=8).settings() == {"batch_size": 8, "calib_batches": 4}
    assert build_method("zeroq", lr=0.2).settings() == {"batch_size": 64, "calib_batches": 1, "distill_iters": 500,
                                                        "lr": 0.2}
    zaq = build_method("zaq", iters=7, checkpoint_interval=3).settings()
    assert zaq["iters"] == 7 and zaq["alpha"] == 1.0 and "checkpoint_interval" not in zaq
    assert {"q_bn_update", "q_lr", "g_lr", "batch_size", "gen_output", "bns_weight", "q_trust_steps"} <= set(zaq)


@pytest.mark.parametrize("name, key", [("zaq-no-feat", "alpha"), ("zaq-no-act", "beta")])
def test_an_ablation_records_its_override_not_the_config_value(name, key):
    assert build_method(name, **{key: 0.5}).settings()[key] == 0.0


def test_noise_calibration_can_average_its_batches_ranges():
    base = QConfig(a_range="minmax")
    assert build_method("ptq").qconfig_for(base) == base  # '' keeps the config's rule
    assert build_method("ptq").settings() == {"batch_size": 64, "calib_batches": 4}  # and stays out of the hash
    assert build_method("ptq", a_range="ema").qconfig_for(base).a_range == "ema"
    assert build_method("dfq", a_range="ema").qconfig_for(base).a_range == "ema"
    assert build_method("ptq", a_range="ema").settings()["a_range"] == "ema"
    assert build_method("zaq").qconfig_for(base) == base
    with pytest.raises(UserError, match=r"methods\.ptq\.a_range='mean' is not valid; use 'minmax', 'ema', "
                                         r"'percentile', 'mse'"):
        build_method("ptq", a_range="mean")
    assert build_method("real-ptq").settings() == {"batch_size": 64, "calib_batches": 4}  # hash unchanged
    assert build_method("real-ptq", a_range="mse").qconfig_for(base).a_range == "mse"
