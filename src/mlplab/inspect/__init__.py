"""A finished run as PNG files, without a TensorBoard server: `python -m mlplab.inspect RUN_DIR`.

`report.write_report(run_dir)` writes curves.png, confusion_matrix.png and misclassified.png
into the run directory; `plots` holds the figures, shared with the TensorBoard callbacks.
"""
