"""Evaluation: one module per measure, all through the daemon's own runner, windows and detector.

- `clip_accuracy`: clip accuracy of a bundle on a labelled dataset (int8, and float when the
  bundle keeps its `.weights.h5`): `soundmon evaluate --dataset`
- `cv_accuracy`: the cross-validation's held-out clip accuracy, re-scored from the fold bundles
  `soundmon train --cv` keeps: `soundmon evaluate --cv`
- `window_accuracy`: labelled-window accuracy on full-length recordings: `soundmon evaluate --recordings`
- `detector_metrics`: the daemon's pipeline and detector on those recordings (segment F1,
  other-class alarms, onset latency): `soundmon evaluate --recordings`, `python -m training.evaluation.detector_metrics`
- `segment_metrics`: the pure counting rules behind `detector_metrics` (no audio, no model)
- `onset_streams`: onset latency over streams of held-out clips: `python -m training.evaluation.onset_streams`
- `onset_probe`: confidence on a sound's first half second: `python -m training.evaluation.onset_probe`
- `latency`: the runners' milliseconds per window and per hop (training reports, model cards)
- `labelled_recordings`, `reports`: labels.csv and seen/unseen recordings; tables, plots, JSON

Only the float column of `clip_accuracy` imports TensorFlow (lazily); everything else runs on
the TFLite runtime alone.
"""
