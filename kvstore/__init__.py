"""kvstore: a replicated key-value store made to run as a Kubernetes StatefulSet."""

__version__ = "0.1.0"
