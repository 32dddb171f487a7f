# The toy task's config: the adapter is imported through mmengine's custom_imports,
# so nothing in zaqbench/, tasks/ or tools/ is edited to add it.
custom_imports = dict(imports=["tests.toy_task"], allow_failed_imports=False)
task = dict(type="toy", width=8)
quant = dict(preset="default")
default_methods = ["fp", "ptq", "zaq"]
methods = dict(ptq=dict(batch_size=16, calib_batches=2),
               zaq=dict(iters=3, batch_size=8, q_steps=1, nz=16, generator_channels=16, calib_batches=1))
