"""Running the vla chain on a remote GPU host reached only by copying the working tree (README.md)."""
