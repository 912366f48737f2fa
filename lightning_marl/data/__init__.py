"""Collection and replay: games (environments) -> collection (in-process or TorchRL worker processes)
-> padded episodes (collector) -> episode replay -> batches (datamodule); greedy evaluation."""
