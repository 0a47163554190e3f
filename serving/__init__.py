"""Ray Serve application of the champion-challenger lifecycle (see serving/app.py)."""
