"""Checks of k8s/, the Dockerfile and the container image."""
