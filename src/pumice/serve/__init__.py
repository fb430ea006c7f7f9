"""Serving local layers over HTTP and opening them in Neuroglancer (`pumice view`)."""
