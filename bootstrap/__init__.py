"""The bootstrap node: a DHT server that helps peers find each other. Nothing else."""
