# The toy task with the test methods of tests/blocking_method.py: block (once, while ZAQBENCH_TEST_BLOCK is set) and fail.
_base_ = ['./toy_config.py']
custom_imports = dict(imports=['tests.toy_task', 'tests.blocking_method'], allow_failed_imports=False)
default_methods = ['fp', 'ptq', 'block', 'zaq']
methods = dict(block=dict(batch_size=16, calib_batches=2))
