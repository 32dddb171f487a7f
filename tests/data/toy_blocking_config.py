# The toy task with a method that blocks while ZAQBENCH_TEST_BLOCK is set (tests/blocking_method.py).
_base_ = ['./toy_config.py']
custom_imports = dict(imports=['tests.toy_task', 'tests.blocking_method'], allow_failed_imports=False)
default_methods = ['fp', 'ptq', 'block', 'zaq']
methods = dict(block=dict(batch_size=16, calib_batches=2))
