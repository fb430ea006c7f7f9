"""Where bytes live: URLs, small objects, the info model and layers."""
