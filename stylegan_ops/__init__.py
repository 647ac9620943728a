"""StyleGAN2 stage library: every stage is an importable ``run(cfg)`` with a CLI front end.

Nothing in this package imports Airflow; TensorFlow is imported only by the stages that
need it, so data preparation starts fast and runs in small containers.
"""

__version__ = "0.1.0"
