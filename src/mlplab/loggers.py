"""Lightning's CSV logger, as a resumed run needs it."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv and appends to it. Lightning's deletes it, so `resume=`
    with `logger=csv` lost every row its earlier calls had logged."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                # Rows are appended under this header; a new key rewrites it, keeping the rows.
                self.metrics_keys = sorted(next(csv.reader(file), []))


class CSVLogger(_LightningCSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` whose metrics.csv a resumed run continues."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
