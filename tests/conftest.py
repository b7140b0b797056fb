import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may reach a hub
