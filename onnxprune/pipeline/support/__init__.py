"""What passes share that is not a pass: the run's checking inputs (``inputs``), quality per stage
(``stages``), the random-token probe (``probe``), augmented copies of calibration data
(``augment``), the padding every sample masks (``padding``), the classes the calibration data
makes a classifier answer (``coverage``) and the soft criteria's scoring (``soft_criteria``)."""
