"""Calibration from labelled rows: abstention thresholds with a guaranteed risk, conformal intervals.

``selective`` and ``conformal`` hold the statistics (numpy only); ``data`` reads the labelled rows;
``calibrate`` runs them through the prediction core and builds the manifest's ``calibration`` section;
``publish`` writes a calibrated copy of a version as the model's next version. Used by ``mcdrop export
--calibration-data`` and ``mcdrop calibrate``; the server only applies what is recorded
(``mcdrop.serving.core.decision``).
"""
