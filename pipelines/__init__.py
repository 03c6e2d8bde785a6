"""Image and model logic of the background-removal service: plain Python, no Ray."""
