"""The pure core: decisions without I/O. Nothing here imports kopf, kubernetes, HTTP or the clock."""
