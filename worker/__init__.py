"""Streaming ECG anomaly-detection worker: Kafka in, scores and anomaly flags out.

Nothing in this package imports TensorFlow: the worker scores with a numpy forward
pass over the weights stored in the artifact (see ``worker.core.artifact``).
"""
