"""Ship a trained run: calibrate its temperature, predict image files, export one file.

This layer sits below the engine: it reads a run directory (:mod:`patchswap.runs`, the Lightning-free format),
rebuilds the network with :func:`patchswap.models.create_model` and the data with
:func:`patchswap.data.build_data`, and never imports the engine, the studies or the CLI.

* :func:`calibrate` -- one temperature fitted on the validation split (NLL), stored in the run;
  :func:`load_temperature` reads it back for ``eval`` and ``predict``.
* :func:`predict` -- top-k classes with (calibrated) probabilities for files and folders.
* :func:`export` -- ONNX, TorchScript or ExportedProgram with the normalisation folded in, verified
  in its runtime and measured (size, latency); the file itself (writing each format, its metadata,
  :func:`load_exported`, :func:`read_metadata`) is :mod:`patchswap.deploy.formats`.
"""

from .calibrate import (
    CALIBRATION_FILE,
    CalibrationReport,
    TemperatureScaled,
    apply_temperature,
    calibrate,
    fit_temperature,
    format_calibration,
    load_calibration,
    load_temperature,
)
from .export import ExportReport, export, format_export
from .formats import FORMATS, DeployModel, UnsupportedOperationError, load_exported, read_metadata
from .loading import DeployError, LoadedRun, load_run
from .predict import Prediction, find_images, format_predictions, predict, write_predictions

__all__ = [
    "CALIBRATION_FILE",
    "FORMATS",
    "CalibrationReport",
    "DeployError",
    "DeployModel",
    "ExportReport",
    "LoadedRun",
    "Prediction",
    "UnsupportedOperationError",
    "apply_temperature",
    "calibrate",
    "export",
    "find_images",
    "fit_temperature",
    "format_calibration",
    "format_export",
    "format_predictions",
    "load_calibration",
    "load_exported",
    "load_run",
    "TemperatureScaled",
    "load_temperature",
    "predict",
    "read_metadata",
    "write_predictions",
]
