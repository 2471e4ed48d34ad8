"""Import TensorFlow and Keras without their C++ start-up banners."""

import os
import re
import sys
import tempfile
from types import ModuleType

# Lines TensorFlow's C++ runtime writes to stderr before Python logging can filter
# them: CUDA probing on machines without a GPU, oneDNN and CPU-instruction notes.
BANNER = re.compile(
    r"All log messages before absl::InitializeLog|"
    r"(port|cudart_stub|cuda_platform|cuda_executor|cpu_feature_guard|node_def_util)\.cc:\d+\]|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate"
)


def import_tensorflow() -> tuple[ModuleType, ModuleType]:
    """(tensorflow, keras), with devices initialized and only unexpected stderr shown."""
    # 3: none of the C++ runtime's own log lines, not even oneDNN's "E0000 ...
    # Falling back to the default Eigen-based implementation" during training. Real
    # failures still raise Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras
            import tensorflow as tf

            # Device discovery (and its CUDA messages) happens on first use: do it now.
            tf.config.list_logical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
        captured.seek(0)
        for line in captured.read().decode(errors="replace").splitlines():
            if line.strip() and not BANNER.search(line):
                sys.stderr.write(line + "\n")
    return tf, keras
