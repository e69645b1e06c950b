"""Benchmarks: our Transformer against torch.nn.Transformer, fused attention, the key/value cache."""
