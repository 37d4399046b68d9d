"""Training: datasets, features, augmentation, models, evaluation and int8 export (imports monitor)."""

import os

# TensorFlow's C++ start-up lines (oneDNN notice, absl pre-init warning) are noise for users of
# `soundmon train`; real errors still raise in Python.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
