"""What each method declares about itself: the settings its rows record."""
import pytest

import zaqbench.methods  # noqa: F401  (registers the methods)
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
