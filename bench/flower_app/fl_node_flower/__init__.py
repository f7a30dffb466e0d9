"""Flower's ServerApp and ClientApp over fl-node's work (bench.flower_task)."""
