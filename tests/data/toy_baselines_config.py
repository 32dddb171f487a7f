# The toy task with GDFQ, DFQ and DFQ+ZAQ at tiny budgets (tests/methods/test_gdfq.py, tests/methods/test_dfq.py).
custom_imports = dict(imports=["tests.toy_task"], allow_failed_imports=False)
task = dict(type="toy", width=8)
quant = dict(preset="default")
default_methods = ["fp", "ptq", "dfq", "gdfq", "dfq+zaq"]
tiny = dict(iters=3, batch_size=8, q_steps=1, nz=16, generator_channels=16, calib_batches=1)
methods = {"ptq": dict(batch_size=16, calib_batches=2), "dfq": dict(batch_size=16, calib_batches=2),
           "gdfq": tiny, "dfq+zaq": tiny}
