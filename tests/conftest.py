import os

# Tests see 8 fake CPU devices, so sharded and 1-device runs can be compared in one process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
