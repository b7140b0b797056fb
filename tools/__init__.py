"""Developer tooling kept apart from the vla package: nothing here is imported by vla."""
