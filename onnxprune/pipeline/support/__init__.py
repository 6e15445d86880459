"""What passes share that is not a pass: the run's checking inputs (``inputs``), quality per stage
(``stages``), the random-token probe (``probe``), augmented copies of calibration data
(``augment``) and the soft criteria's scoring (``soft_criteria``)."""
