"""A quiet TensorFlow start: no device noise on stderr on a machine without a GPU.

TensorFlow writes its start-up lines (the oneDNN banner, "Could not find cuda
drivers", an `E0000 ... failed call to cuInit` on a machine with no GPU) from C++
before its log level applies, so an environment variable cannot hide them. This
module imports TensorFlow and lists its devices with stderr captured at the file
descriptor, then writes back every line that is not such start-up noise. On a
machine with an NVIDIA device nothing is dropped, so a GPU that fails to start is
still reported. `TFSTRUCTVAE_TF_LOGS=1` turns the filter off.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import tempfile

ENV_VAR = "TFSTRUCTVAE_TF_LOGS"

# Start-up lines that carry no information on a machine without a GPU.
NOISE = re.compile("|".join((
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
)))


def has_gpu_hardware() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.isdir("/proc/driver/nvidia")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and initialise its devices, dropping start-up noise from stderr."""
    if os.environ.get(ENV_VAR):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if has_gpu_hardware():
        return
    # Imported before this package, TensorFlow has printed its banner already, but its devices
    # start only when first listed: that (with the cuInit line) still happens below.
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no usable stderr descriptor (some embedded interpreters)
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()      # device initialisation prints its lines now
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and not NOISE.search(line)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
