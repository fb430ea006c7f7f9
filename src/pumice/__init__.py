"""Pumice: volume pipeline for connectomics."""
__version__ = "0.1.0"
