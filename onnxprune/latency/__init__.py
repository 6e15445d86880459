"""Latency as a target: what a cut costs in time on the device that will run the model.

``device``: the fingerprint latency tables are cached under (provider, processor, threads,
onnxruntime version); ``table``: per-layer latencies measured as standalone one-node models at
the widths a search can choose, cached in the user's cache folder; ``model``: the latency of
any unit mask predicted from the table (``CostModel`` asks it for ``latency`` targets);
``measure``: end-to-end latency of whole models, measured alternately.
"""
