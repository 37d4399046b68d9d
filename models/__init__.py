"""The shipped model bundles, installed as package data (`soundmon_models`).

Each bundle is `<name>.tflite` + `<name>.json` (+ `<name>.stream.tflite`) with its model card
`<name>.md`. The daemon finds them with `importlib.resources`, so a wheel installed on a Pi
runs with no `model.path` set (monitor.config.default_model_path). Training artefacts beside
them (`*.weights.h5`, `*_cv/`, plots) stay in the repository and are not installed.
"""
