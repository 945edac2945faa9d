"""Example plug-ins of hamgraph: a model, a dataset and a metric (see docs/plugins.md)."""
