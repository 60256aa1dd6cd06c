"""Federated learning: models, data sets, partitioning, aggregation, client training, the cluster."""
