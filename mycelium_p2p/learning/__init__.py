"""Local learning: data, models, training and the Flower glue.

``data`` (node data from a spec), ``models`` (spec strings, building, weights and their bytes,
update checks), ``train`` (train/evaluate one split) and ``flower`` (``GroupServer`` and
``MemberClient``; the ONLY module of the project that imports ``flwr``, imported on demand so
that data and models stay light).
"""
